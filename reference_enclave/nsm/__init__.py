"""NSM access: the device or the simulated device, one client interface.

The enclave imports :mod:`enclave_runtime.nsm.client` (stdlib + cbor2 only);
the simulator (:mod:`.simulator`, :mod:`.sim_ca`, :mod:`.document`) runs on the
host side of the launcher.
"""
