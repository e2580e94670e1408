"""The foundation every other package stands on: errors, the preset schema, losses and metrics,
image conversion, measurement probes, progress display, the device, the bench home."""
