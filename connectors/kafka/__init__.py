"""Kafka: a consumer-group source, a range source for backfills, a producer sink (aiokafka).

The source only translates: records become `Event`s, the runtime's pause set
becomes `pause()`/`resume()` (polling never stops, so the group does not
rebalance while the worker is busy), rebalances become `assigned`/`revoked`
calls, and offsets the runtime made durable are committed to Kafka so lag
tools see them. Offsets live first in the run store; on assignment the
consumer seeks to them.

One module each: `_source` (KafkaSource and its rebalances), `_range`
(KafkaRangeSource), `_sink` (KafkaSink), `_config` (KafkaConnection) and
`_errors` (aiokafka's errors as eventflow's, bounded calls).
"""

from ._config import KafkaConnection, SaslMechanism, SecurityProtocol
from ._errors import CALL_TIMEOUT, KafkaBrokerError, KafkaStalledError, KafkaUnavailableError
from ._range import KafkaRangeSource
from ._sink import KafkaSink
from ._source import KafkaSource

__all__ = [
    "CALL_TIMEOUT",
    "KafkaBrokerError",
    "KafkaConnection",
    "KafkaRangeSource",
    "KafkaSink",
    "KafkaSource",
    "KafkaStalledError",
    "KafkaUnavailableError",
    "SaslMechanism",
    "SecurityProtocol",
]
