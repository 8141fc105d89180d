"""Register access to an HLS ap_ctrl_hs IP under PYNQ, shared by the generated drivers (copied into host/)."""


def set_address(ip, arg, addr):
    """Write a buffer's physical address into the IP's register for argument ``arg`` (Vitis HLS names it ``arg``,
    or ``arg_1``/``arg_2`` for the two halves of a 64-bit address on some versions)."""
    regs = ip.register_map
    names = [n for n in dir(regs) if n.startswith(arg)]
    if f"{arg}_1" in names:
        setattr(regs, f"{arg}_1", addr & 0xFFFFFFFF)
        setattr(regs, f"{arg}_2", addr >> 32)
    elif arg in names:
        setattr(regs, arg, addr)
    else:
        raise RuntimeError(f"register for {arg!r} not found in {names}; check the IP's register map")


def run(ip):
    """Start the IP (ap_start) and wait until it is done (ap_done)."""
    ip.write(0x00, 0x01)
    while (ip.read(0x00) & 0x2) == 0:
        pass
