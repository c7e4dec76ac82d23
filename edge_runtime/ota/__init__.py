"""Over-the-air model updates on the device.

- :mod:`.policy` (pure: no file, network, clock or TUF access): the custom fields a published
  target carries (one definition for the publisher and the device), which target a device takes
  (channel, device profile, staged rollout, versions that failed before), and whether a model on
  probation is rolled back.

The I/O around it (the python-tuf client, the A/B slot store, the child-process smoke test) is
built on these decisions. Importing this package does nothing.
"""
