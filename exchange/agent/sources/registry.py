"""The vendor tools the agent knows: name -> (command it runs, pure parser of the output)."""

from __future__ import annotations

from collections.abc import Callable

from exchange.agent.sources import amd, cambricon, huawei, hygon, iluvatar, kunlunxin, metax, mthreads, nvidia
from exchange.agent.sources.model import Scan

Parser = Callable[[str], Scan]

TOOLS: dict[str, tuple[tuple[str, ...], Parser]] = {
    nvidia.TOOL: (nvidia.COMMAND, nvidia.parse),
    amd.TOOL: (amd.COMMAND, amd.parse),
    "amd-smi": (amd.AMD_SMI_COMMAND, amd.parse_amd_smi),
    huawei.TOOL: (huawei.COMMAND, huawei.parse),
    cambricon.TOOL: (cambricon.COMMAND, cambricon.parse),
    hygon.TOOL: (hygon.COMMAND, hygon.parse),
    kunlunxin.TOOL: (kunlunxin.COMMAND, kunlunxin.parse),
    iluvatar.TOOL: (iluvatar.COMMAND, iluvatar.parse),
    metax.TOOL: (metax.COMMAND, metax.parse),
    mthreads.TOOL: (mthreads.COMMAND, mthreads.parse),
}
