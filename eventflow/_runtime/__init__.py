"""The long-running App: sources -> dispatcher -> engine; offsets; shutdown."""
