"""Pure pieces of USB configuration sticks: which devices, where the config is,
how it is copied safely, and the report written back. No udev, no mounts here."""
