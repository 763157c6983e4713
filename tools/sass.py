"""SASS listings split per kernel and counted by instruction class.

The classes are what a performance engineer scans for first: is it memory-bound (global loads),
does it use tensor cores (HMMA/HGMMA), does it spill (LDL/STL), how much control flow.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_FUNCTION_RE = re.compile(r"^\s*Function\s*:\s*(\S+)")
_INSTR_RE = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_]*)(\.[\w.]+)?")

_CLASSES: dict[str, tuple[str, ...]] = {
    "global_memory": ("LDG", "STG", "LD", "ST", "ATOM", "ATOMG", "RED", "LDGSTS", "LDGDEPBAR",
                      "UBLKCP", "UTMALDG", "UTMASTG", "UTMAPF", "CCTL"),
    "shared_memory": ("LDS", "STS", "LDSM", "STSM", "ATOMS", "LDSGSTS"),
    "local_memory": ("LDL", "STL"),
    "constant_memory": ("LDC", "ULDC"),
    "tensor_core": ("HMMA", "IMMA", "HGMMA", "IGMMA", "QGMMA", "DMMA", "BMMA", "QMMA", "UTCMMA",
                    "UTCHMMA", "UTCQMMA", "OMMA"),
    "fp32": ("FADD", "FMUL", "FFMA", "FMNMX", "FSETP", "FSET", "MUFU", "FCHK", "FSEL", "FSWZADD",
             "FADD2", "FMUL2", "FFMA2", "FMNMX3"),
    "fp16": ("HADD2", "HMUL2", "HFMA2", "HMNMX2", "HSETP2", "HSET2"),
    "fp64": ("DADD", "DMUL", "DFMA", "DSETP", "DMNMX"),
    "integer": ("IADD3", "IADD", "IMAD", "IMUL", "LOP3", "LOP", "SHF", "SHL", "SHR", "ISETP",
                "IMNMX", "IABS", "LEA", "POPC", "FLO", "BREV", "UIADD3", "UIMAD", "ULOP3", "USHF",
                "UISETP", "ULEA", "VIADD", "VIMNMX", "IDP", "VABSDIFF", "PRMT", "UPRMT", "ISCADD",
                "VIADDMNMX", "UFLO", "UPOPC", "PLOP3", "UPLOP3", "ULOP", "USEL", "BMSK", "UBMSK",
                "SGXT", "USGXT", "IMNMX3"),
    "conversion": ("F2F", "F2I", "I2F", "I2I", "F2FP", "I2FP", "F2IP", "FRND", "UF2FP"),
    "control": ("BRA", "BRX", "JMP", "JMX", "EXIT", "RET", "CALL", "BSSY", "BSYNC", "BREAK", "BPT",
                "KILL", "ACQBULK", "ELECT", "UCGABAR_ARV", "UCGABAR_WAIT", "WARPGROUP",
                "ENDCOLLECTIVE", "YIELD", "BMOV", "RPCMOV"),
    "sync": ("BAR", "MEMBAR", "DEPBAR", "SYNCS", "WARPSYNC", "ERRBAR", "FENCE", "CGAERRBAR",
             "ARRIVES", "WARPGROUPSET", "CCTLL"),
    "move": ("MOV", "UMOV", "S2R", "S2UR", "CS2R", "R2UR", "SEL", "SHFL", "P2R", "R2P", "VOTE",
             "VOTEU", "MATCH", "REDUX", "B2R", "R2B", "UR2R"),
}
_CLASS_OF = {op: cls for cls, ops in _CLASSES.items() for op in ops}
MIX_CLASSES = tuple(_CLASSES) + ("other",)


def split_functions(sass: str) -> dict[str, list[str]]:
    """Kernel name -> its SASS lines, from `cuobjdump -sass` output."""
    functions: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in sass.splitlines():
        if m := _FUNCTION_RE.match(line):
            current = functions.setdefault(m.group(1), [])
            continue
        if current is not None:
            current.append(line)
    return functions


def opcodes(lines: list[str]) -> Counter[str]:
    """Base opcodes (modifiers stripped) of the instructions in a listing."""
    counts: Counter[str] = Counter()
    for line in lines:
        m = _INSTR_RE.match(line)
        if not m or m.group(1) == "NOP":  # NOPs are alignment padding
            continue
        op = m.group(1)
        if op == "HFMA2" and (m.group(2) or "").startswith(".MMA") and "-RZ, RZ" in line:
            op = "MOV"  # "HFMA2.MMA Rx, -RZ, RZ, imm" is the compiler's constant-move idiom
        counts[op] += 1
    return counts


def instruction_mix(counts: Counter[str]) -> dict[str, Any]:
    """InstructionMix JSON from opcode counts."""
    mix: dict[str, Any] = {cls: 0 for cls in MIX_CLASSES}
    for op, n in counts.items():
        mix[_CLASS_OF.get(op, "other")] += n
    mix["total"] = sum(counts.values())
    mix["opcodes"] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return mix


def describe_mix(mix: dict[str, Any]) -> str:
    """"412 instructions: 18% global memory, 31% fp32, ...": the three largest classes."""
    total = mix.get("total", 0)
    if not total:
        return "no instructions"
    shares = sorted(((mix[c], c) for c in MIX_CLASSES if mix.get(c)), reverse=True)[:4]
    parts = [f"{100 * n // total}% {c.replace('_', ' ')}" for n, c in shares]
    flags = []
    if mix.get("local_memory"):
        flags.append(f"{mix['local_memory']} local-memory ops (spills?)")
    if mix.get("tensor_core"):
        flags.append(f"{mix['tensor_core']} tensor-core ops")
    else:
        flags.append("no tensor-core ops")
    return f"{total} instructions: " + ", ".join(parts) + "; " + ", ".join(flags)
