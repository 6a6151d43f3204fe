"""Compiled contracts for the dev chain: loading, ABI coding and bytecode surgery.

Guarantees:
- artifacts are read from the npm packages installed in ``node_modules/`` of the
  repository root (never copied into the repository); a missing one raises
  :class:`ArtifactError` naming the file and how to install it;
- :class:`Abi` encodes calls and decodes results and logs with ``eth_abi`` from the
  artifact's own ABI, so no hand-written selector can drift from the contract;
- :func:`patch_decimals` changes exactly one byte of an OpenZeppelin 4 ERC20 runtime,
  found by following the ``decimals()`` dispatcher entry, or raises;
- :func:`multicall3_runtime` reads Multicall3's canonical runtime bytecode from the
  ``multicall`` PyPI distribution as text (its modules are not importable here).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils import abi as abi_utils

from daemon.demo.devchain.errors import INSTALL_HINT, ArtifactError

if TYPE_CHECKING:
    # Types only: the ABI TypedDicts of eth-typing (a dependency of eth-abi, not an
    # import of alvh at run time).
    from eth_typing import ABIConstructor, ABIEvent, ABIFunction

REPO_ROOT = Path(__file__).resolve().parents[3]
NODE_MODULES = REPO_ROOT / "node_modules"

#: Artifact name -> path inside node_modules. V2's build JSON is waffle format
#: (``bytecode`` without ``0x``); the others are Hardhat/Truffle format.
ARTIFACT_PATHS: Mapping[str, str] = {
    "ERC20PresetFixedSupply": (
        "@openzeppelin/contracts/build/contracts/ERC20PresetFixedSupply.json"
    ),
    "UniswapV3Factory": (
        "@uniswap/v3-core/artifacts/contracts/UniswapV3Factory.sol/UniswapV3Factory.json"
    ),
    "UniswapV3Pool": "@uniswap/v3-core/artifacts/contracts/UniswapV3Pool.sol/UniswapV3Pool.json",
    "NonfungiblePositionManager": (
        "@uniswap/v3-periphery/artifacts/contracts/NonfungiblePositionManager.sol/"
        "NonfungiblePositionManager.json"
    ),
    "SwapRouter": "@uniswap/v3-periphery/artifacts/contracts/SwapRouter.sol/SwapRouter.json",
    "UniswapV2Factory": "@uniswap/v2-core/build/UniswapV2Factory.json",
    "UniswapV2Pair": "@uniswap/v2-core/build/UniswapV2Pair.json",
}

#: The address Multicall3 is deployed at on every chain (deterministic deployment).
MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11"

#: The smallest ABI Multicall3 needs here (aggregate3 and a block-number read).
MULTICALL3_ABI: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "name": "aggregate3",
        "stateMutability": "payable",
        "inputs": [
            {
                "name": "calls",
                "type": "tuple[]",
                "components": [
                    {"name": "target", "type": "address"},
                    {"name": "allowFailure", "type": "bool"},
                    {"name": "callData", "type": "bytes"},
                ],
            }
        ],
        "outputs": [
            {
                "name": "returnData",
                "type": "tuple[]",
                "components": [
                    {"name": "success", "type": "bool"},
                    {"name": "returnData", "type": "bytes"},
                ],
            }
        ],
    },
    {
        "type": "function",
        "name": "getBlockNumber",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "blockNumber", "type": "uint256"}],
    },
)


class Abi:
    """Call encoding and result/log decoding for one contract ABI.

    Functions are looked up by name; an overloaded name is an error (none of the
    contracts used here overload the functions the harness calls).
    """

    __slots__ = ("_entries", "_events", "_functions")

    def __init__(self, entries: Sequence[Mapping[str, Any]]) -> None:
        self._entries = tuple(dict(e) for e in entries)
        functions: dict[str, list[dict[str, Any]]] = {}
        events: dict[str, dict[str, Any]] = {}
        for entry in self._entries:
            if entry.get("type") == "function":
                functions.setdefault(entry["name"], []).append(entry)
            elif entry.get("type") == "event":
                events[entry["name"]] = entry
        self._functions = functions
        self._events = events

    def _function(self, name: str) -> dict[str, Any]:
        found = self._functions.get(name)
        if not found:
            raise ArtifactError(f"function {name!r} is not in the ABI")
        if len(found) > 1:
            raise ArtifactError(f"function {name!r} is overloaded in the ABI")
        return found[0]

    def selector(self, name: str) -> bytes:
        """The 4-byte selector of function ``name``."""
        fn = cast("ABIFunction", self._function(name))
        return abi_utils.function_abi_to_4byte_selector(fn)

    def encode_call(self, name: str, *args: Any) -> bytes:
        """Calldata for ``name(*args)``; structs are passed as tuples."""
        fn = cast("ABIFunction", self._function(name))
        types = abi_utils.get_abi_input_types(fn)
        return abi_utils.function_abi_to_4byte_selector(fn) + abi_encode(types, list(args))

    def decode_result(self, name: str, data: bytes) -> tuple[Any, ...]:
        """The decoded return values of ``name``."""
        fn = cast("ABIFunction", self._function(name))
        return tuple(abi_decode(abi_utils.get_abi_output_types(fn), data))

    def encode_constructor(self, *args: Any) -> bytes:
        """ABI-encoded constructor arguments (to append to the creation code)."""
        ctors = [e for e in self._entries if e.get("type") == "constructor"]
        if not ctors:
            if args:
                raise ArtifactError("the ABI has no constructor but arguments were given")
            return b""
        types = abi_utils.get_abi_input_types(cast("ABIConstructor", ctors[0]))
        return abi_encode(types, list(args))

    def event_topic(self, name: str) -> bytes:
        """topic0 of event ``name``."""
        event = self._events.get(name)
        if event is None:
            raise ArtifactError(f"event {name!r} is not in the ABI")
        return abi_utils.event_abi_to_log_topic(cast("ABIEvent", event))

    def decode_event(self, name: str, topics: Sequence[bytes], data: bytes) -> dict[str, Any]:
        """Decode one log of event ``name`` into ``{argument name: value}``."""
        event = self._events.get(name)
        if event is None:
            raise ArtifactError(f"event {name!r} is not in the ABI")
        inputs = event["inputs"]
        indexed = [i for i in inputs if i["indexed"]]
        plain = [i for i in inputs if not i["indexed"]]
        values: dict[str, Any] = {}
        for item, topic in zip(indexed, topics[1:], strict=True):
            values[item["name"]] = abi_decode([item["type"]], topic)[0]
        decoded = abi_decode([i["type"] for i in plain], data)
        for item, value in zip(plain, decoded, strict=True):
            values[item["name"]] = value
        return values


@dataclass(frozen=True, slots=True)
class Artifact:
    """A compiled contract: its ABI and its creation bytecode."""

    name: str
    abi: Abi
    bytecode: bytes

    def __post_init__(self) -> None:
        if not self.bytecode:
            raise ArtifactError(f"artifact {self.name} has no creation bytecode")

    def creation_code(self, *constructor_args: Any) -> bytes:
        """Creation bytecode followed by the encoded constructor arguments."""
        return self.bytecode + self.abi.encode_constructor(*constructor_args)


def _hex_bytes(text: str, where: str) -> bytes:
    body = text.removeprefix("0x")
    try:
        return bytes.fromhex(body)
    except ValueError as exc:
        raise ArtifactError(f"{where}: bytecode is not plain hex ({exc})") from exc


@functools.cache
def load_artifact(name: str) -> Artifact:
    """Load the compiled artifact ``name`` (a key of :data:`ARTIFACT_PATHS`)."""
    relative = ARTIFACT_PATHS.get(name)
    if relative is None:
        raise ArtifactError(f"unknown artifact {name!r}; known: {', '.join(ARTIFACT_PATHS)}")
    path = NODE_MODULES / relative
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"contract artifact {path} is missing; {INSTALL_HINT}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"contract artifact {path} is unreadable: {exc}") from exc
    bytecode = raw.get("bytecode")
    if not isinstance(bytecode, str) or not bytecode.removeprefix("0x"):
        raise ArtifactError(f"contract artifact {path} has no bytecode")
    if "__" in bytecode:
        # Unlinked library placeholders would deploy garbage; none of ours has any.
        raise ArtifactError(f"contract artifact {path} needs library linking")
    return Artifact(name=name, abi=Abi(raw["abi"]), bytecode=_hex_bytes(bytecode, str(path)))


_MULTICALL3_RE = re.compile(
    r"MULTICALL3_BYTECODE\b[^=\n]*=\s*(?:HexStr\()?\s*[\"'](0x[0-9a-fA-F]+)[\"']"
)


@functools.cache
def multicall3_runtime() -> bytes:
    """Multicall3's runtime bytecode, read as text from the ``multicall`` distribution.

    The package is installed with ``--no-deps`` (its dependencies pin an old web3 and
    faster-eth-abi that alvh does not need), so its modules cannot be imported;
    ``constants.py`` is read as a file.
    """
    hint = "it is installed by ./scripts/setup.sh (`pip install --no-deps multicall==0.15.2`)"
    try:
        dist = importlib.metadata.distribution("multicall")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ArtifactError(f"the Python package `multicall` is missing; {hint}") from exc
    path = Path(str(dist.locate_file("multicall/constants.py")))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ArtifactError(f"cannot read {path} from the `multicall` package: {exc}") from exc
    match = _MULTICALL3_RE.search(text)
    if match is None:
        raise ArtifactError(f"MULTICALL3_BYTECODE not found in {path}; {hint}")
    return _hex_bytes(match.group(1), str(path))


# --- decimals() patch ------------------------------------------------------------
#
# OpenZeppelin 4's ERC20 hard-codes ``decimals() returns 18`` and the preset has no
# constructor argument for it, so a 6-decimals USDC look-alike is made by editing
# the deployed runtime code. Solidity compiles ``return 18`` to ``PUSH1 0x12``
# somewhere on the code path of the ``decimals()`` entry. We find that path by
# parsing the function dispatcher (``DUP1 PUSH4 0x313ce567 EQ PUSH2 dest JUMPI``),
# then walking the code from ``dest`` and following only jumps whose target is a
# constant (``PUSH2 t JUMP``, and the non-reverting branch of ``PUSH2 t JUMPI``) until
# the path returns or jumps to a computed address. Exactly one ``PUSH1 0x12`` must
# be on that path; any other count means the code is not what we expect and we
# refuse to guess. Swapping the one-byte immediate keeps every offset, jump
# target and the metadata trailer intact. The caller verifies by calling decimals().

DECIMALS_SELECTOR = bytes.fromhex("313ce567")
_OP_PUSH1, _OP_PUSH2, _OP_PUSH4, _OP_PUSH32 = 0x60, 0x61, 0x63, 0x7F
_OP_JUMP, _OP_JUMPI, _OP_JUMPDEST, _OP_EQ = 0x56, 0x57, 0x5B, 0x14
_TERMINATORS = frozenset({0x00, 0xF3, 0xFD, 0xFE, 0xFF})  # STOP RETURN REVERT INVALID SELFDESTRUCT


@dataclass(frozen=True, slots=True)
class _Instruction:
    pc: int
    opcode: int
    immediate: bytes


def _disassemble(code: bytes) -> list[_Instruction]:
    instructions: list[_Instruction] = []
    pc = 0
    while pc < len(code):
        opcode = code[pc]
        width = opcode - _OP_PUSH1 + 1 if _OP_PUSH1 <= opcode <= _OP_PUSH32 else 0
        instructions.append(_Instruction(pc, opcode, code[pc + 1 : pc + 1 + width]))
        pc += 1 + width
    return instructions


def _dispatch_target(instructions: Sequence[_Instruction], selector: bytes) -> int:
    targets = [
        int.from_bytes(instructions[i + 2].immediate, "big")
        for i in range(len(instructions) - 3)
        if instructions[i].opcode == _OP_PUSH4
        and instructions[i].immediate == selector
        and instructions[i + 1].opcode == _OP_EQ
        and instructions[i + 2].opcode == _OP_PUSH2
        and instructions[i + 3].opcode == _OP_JUMPI
    ]
    if len(targets) != 1:
        raise ArtifactError(
            f"expected one dispatcher entry for selector 0x{selector.hex()}, found {len(targets)}"
        )
    return targets[0]


def find_decimals_push(runtime: bytes) -> int:
    """Offset of the ``PUSH1 0x12`` that ``decimals()`` returns, in an OZ4 ERC20 runtime."""
    instructions = _disassemble(runtime)
    index_at = {ins.pc: i for i, ins in enumerate(instructions)}
    start = _dispatch_target(instructions, DECIMALS_SELECTOR)
    sites: list[int] = []
    visited: set[int] = set()
    i = index_at.get(start)
    if i is None or instructions[i].opcode != _OP_JUMPDEST:
        raise ArtifactError(f"decimals() dispatcher target {start:#x} is not a JUMPDEST")
    while i is not None and i < len(instructions) and i not in visited:
        visited.add(i)
        ins = instructions[i]
        if ins.opcode == _OP_PUSH1 and ins.immediate == b"\x12":
            sites.append(ins.pc)
        if ins.opcode in _TERMINATORS:
            break
        if ins.opcode in (_OP_JUMP, _OP_JUMPI):
            previous = instructions[i - 1]
            if previous.opcode != _OP_PUSH2:
                break  # computed jump: an internal return, the constant is behind us
            i = index_at.get(int.from_bytes(previous.immediate, "big"))
            continue
        i += 1
    if len(sites) != 1:
        raise ArtifactError(
            f"expected exactly one `PUSH1 0x12` on the decimals() path, found {len(sites)}"
        )
    return sites[0]


def patch_decimals(runtime: bytes, decimals: int) -> bytes:
    """``runtime`` with ``decimals()`` returning ``decimals`` instead of 18."""
    if not 0 <= decimals <= 255:
        raise ValueError(f"decimals must fit in a uint8, got {decimals}")
    site = find_decimals_push(runtime)
    patched = bytearray(runtime)
    patched[site + 1] = decimals
    return bytes(patched)
