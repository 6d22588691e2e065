"""The GET_DEST reply layout: what ip_vs_genl_fill_dest() writes on Linux 3.18+ (tunnel fields
5.2+), every attribute in this order with these sizes (ADDR is the 16-byte union), so a whole
reply decodes with one struct unpack once its header words are checked.

Shared by the backend's decoder (lvsd/ipvs/netlink.py) and lvsadm's lean listing
(lvsd/cli/lvsadm_fastlist.py), which must not import the model (its start-up cost): stdlib
``struct`` only. Replies of any other layout (older kernels, arches that add pad attributes)
are left to the generic attribute parser.
"""

#: (attribute type, struct format of its value or None for a nest header, value width); nested
#: types are those of include/uapi/linux/ip_vs.h (IPVS_CMD_ATTR_DEST, IPVS_DEST_ATTR_*,
#: IPVS_STATS_ATTR_*).
DEST_PARTS: tuple[tuple[int, str | None, int], ...] = (
    (2, None, 0),  # IPVS_CMD_ATTR_DEST, nested
    (1, "16s", 16),  # ADDR (the 16-byte union)
    (2, "H2x", 2),  # PORT (be16)
    (3, "I", 4),  # FWD_METHOD
    (4, "I", 4),  # WEIGHT
    (13, "B3x", 1),  # TUN_TYPE
    (14, "H2x", 2),  # TUN_PORT
    (15, "H2x", 2),  # TUN_FLAGS
    (5, "I", 4),  # U_THRESH
    (6, "I", 4),  # L_THRESH
    (7, "I", 4),  # ACTIVE_CONNS
    (8, "I", 4),  # INACT_CONNS
    (9, "I", 4),  # PERSIST_CONNS
    (11, "H2x", 2),  # ADDR_FAMILY
    (10, None, 0),  # STATS (32-bit counters; bytes are u64), nested: skipped
    *((t, "4x" if t not in (4, 5) else "8x", 4 if t not in (4, 5) else 8) for t in range(1, 11)),
    (12, None, 0),  # STATS64, nested
    *((t, "Q", 8) for t in range(1, 11)),
)


def _build() -> tuple[str, str, tuple[int, ...], int]:
    """(values format, headers format, expected header words, payload size); formats without a
    byte-order prefix."""
    vals: list[str] = []
    hdrs: list[str] = []
    expected: list[int] = []
    nests: list[tuple[int, int]] = []  # (index in expected, start offset)
    size = 0
    for atype, fmt, width in DEST_PARTS:
        if fmt is None:  # a nest header: its length is patched once its content is known
            nests.append((len(expected), size))
            expected += [0, atype]
            vals.append("4x")
            hdrs.append("HH")
            size += 4
            continue
        expected += [4 + width, atype]
        pad = -width & 3
        vals.append("4x" + fmt)
        hdrs.append("HH" + f"{width + pad}x")
        size += 4 + width + pad
    # nests: the top one spans everything; STATS up to STATS64; STATS64 to the end
    (top_i, _), (st_i, st_off), (st64_i, st64_off) = nests
    expected[top_i] = size
    expected[st_i] = st64_off - st_off
    expected[st64_i] = size - st64_off
    return "".join(vals), "".join(hdrs), tuple(expected), size


DEST_VALUES_FORMAT, DEST_HEADERS_FORMAT, DEST_HEADERS, DEST_REPLY_SIZE = _build()


def _value_offsets() -> tuple[tuple[int, str, int], ...]:
    """(offset in the reply payload, struct format, width) of each value of DEST_PARTS, nest
    headers not counted: value 0 is ADDR, 1 PORT, 2 FWD_METHOD, ... 12 ADDR_FAMILY, 13-22 the
    32-bit STATS, 23-32 STATS64."""
    out = []
    pos = 0
    for _atype, fmt, width in DEST_PARTS:
        pos += 4
        if fmt is not None:
            out.append((pos, fmt, width))
            pos += width + (-width & 3)
    return tuple(out)


DEST_VALUE_OFFSETS = _value_offsets()
