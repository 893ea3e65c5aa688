"""The long-running App; each subscription a pipeline: deliver -> decide -> run -> settle."""
