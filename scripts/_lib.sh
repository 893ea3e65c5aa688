# Shell helpers shared by scripts/kafka.sh and scripts/postgres.sh (sourced, not run).

valid_port() {
    [[ "$1" =~ ^[0-9]+$ ]] && (($1 > 0 && $1 < 65536))
}

# port_open PORT [HOST]: something listens there (HOST default 127.0.0.1)
port_open() {
    (: >"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null
}

# a zombie (exited, not reaped yet by whoever inherited it) counts as gone
pid_gone() {
    ! kill -0 "$1" 2>/dev/null || [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" == Z ]]
}

wait_gone() {
    local pid=$1 timeout=$2 deadline
    deadline=$((SECONDS + timeout))
    until pid_gone "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}
