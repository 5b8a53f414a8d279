"""The real robot: the Cartesian impedance law and its safety filters, pose helpers, the backend protocol,
the libfranka backend and the driver node. The simulator lives apart, in ``msdp_franka_driver.sim``."""
