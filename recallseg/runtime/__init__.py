"""The process a run lives in: device, precision and processes, random states, signals."""
