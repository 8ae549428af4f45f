#!/usr/bin/env python3
"""SCALE-Sim beside Tessera on ResNet-50's convolutions (issue 20), not part of CI.

For every distinct convolution of ResNet-50 as SCALE-Sim's topology file
`topologies/conv_nets/Resnet50.csv` lists it (batch 1; the rows below are that file's
data, deduplicated by shape), this script:

- runs SCALE-Sim (PyPI `scalesim`, installed by `bench/scalesim/run.sh`) on a 128 x 128
  array, output stationary and weight stationary, with generous SRAMs (6 MB each, so no
  layer is limited by them) and the interface bandwidth it calculates (no stalls), and
  reads each layer's total cycles from its COMPUTE_REPORT.csv;
- runs Tessera on the same layer as torchvision writes it at batch 1 (padding k // 2, bf16
  input and weights, f32 accumulation, bias and relu fused, bf16 output) with
  `tessera run KERNEL --random 1 --report`, and reads the total cycles;
- prints one Markdown row per layer: MAC utilisation = useful MACs / (16,384 x cycles),
  and Tessera's at its report's latency-aware ceiling (what no lowering can beat),
  each tool's useful MACs those of the layer it ran. SCALE-Sim convolves without padding
  (a 3x3 over 56x56 gives 54x54), so its MACs are counted over its own output; Tessera's
  over torchvision's (56x56).

Usage: bench/scalesim/run.sh [--tessera target/release/tessera] [--work DIR] [--layers A,B]
"""

import argparse
import csv
import os
import re
import subprocess
import sys

# name, IFMAP height, IFMAP width, filter height, filter width, channels, filters, stride:
# the distinct rows of SCALE-Sim's topologies/conv_nets/Resnet50.csv (the first layer of
# each shape; FC6 is the classifier as a 1x1 convolution).
LAYERS = [
    ("Conv1", 224, 224, 7, 7, 3, 64, 2),
    ("CB2a_1", 56, 56, 1, 1, 64, 64, 1),
    ("CB2a_2", 56, 56, 3, 3, 64, 64, 1),
    ("CB2a_3", 56, 56, 1, 1, 64, 256, 1),
    ("IB2b_1", 56, 56, 1, 1, 256, 64, 1),
    ("CB3a_1", 56, 56, 1, 1, 256, 128, 2),
    ("CB3a_2", 28, 28, 3, 3, 128, 128, 1),
    ("CB3a_3", 28, 28, 1, 1, 128, 512, 1),
    ("CB3s", 56, 56, 1, 1, 256, 512, 2),
    ("IB3b_1", 28, 28, 1, 1, 512, 128, 1),
    ("CB4a_1", 28, 28, 1, 1, 512, 256, 2),
    ("CB4a_2", 14, 14, 3, 3, 256, 256, 1),
    ("CB4a_3", 14, 14, 1, 1, 256, 1024, 1),
    ("CB4s", 28, 28, 1, 1, 512, 1024, 2),
    ("IB4b_1", 14, 14, 1, 1, 1024, 256, 1),
    ("CB5a_1", 14, 14, 1, 1, 1024, 512, 2),
    ("CB5a_2", 7, 7, 3, 3, 512, 512, 1),
    ("CB5a_3", 7, 7, 1, 1, 512, 2048, 1),
    ("CB5s", 14, 14, 1, 1, 1024, 2048, 2),
    ("IB5b_1", 7, 7, 1, 1, 2048, 512, 1),
    ("FC6", 1, 1, 1, 1, 2048, 1000, 1),
]

PE = 128 * 128

CONFIG = """[general]
run_name = resnet50_{df}

[architecture_presets]
ArrayHeight:    128
ArrayWidth:     128
IfmapSramSzkB:    6144
FilterSramSzkB:   6144
OfmapSramSzkB:    6144
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 10
Dataflow : {df}
MemoryBanks:   1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def scalesim_cycles(layer, df, work):
    """SCALE-Sim's total cycles of one layer under dataflow `df`."""
    name = layer[0]
    d = os.path.join(work, f"{name}_{df}")
    report = os.path.join(d, f"resnet50_{df}", "COMPUTE_REPORT.csv")
    if not os.path.exists(report):
        run_scalesim(layer, df, d)
    with open(report) as f:
        rows = list(csv.reader(f))
    head = [h.strip() for h in rows[0]]
    row = [v.strip() for v in rows[1]]
    return int(float(row[head.index("Total Cycles")]))


def run_scalesim(layer, df, d):
    """Runs SCALE-Sim on one layer in folder `d` (its report stays there, so a second run
    of this script reuses it)."""
    from scalesim.scale_sim import scalesim

    name = layer[0]
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "scale.cfg")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(df=df))
    topo = os.path.join(d, f"{name}.csv")
    with open(topo, "w") as f:
        f.write("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                "Channels, Num Filter, Strides,\n")
        f.write(",".join(str(x) for x in layer) + ",\n")
    # SCALE-Sim 3 reads a layout file even when the config keeps its default layouts
    # (`IfmapCustomLayout: False`); this row has the shape of its own resnet18 example's.
    layout = os.path.join(d, f"{name}_layout.csv")
    with open(layout, "w") as f:
        f.write("Layer name, IFMAP Height Intraline Factor, IFMAP Width Intraline Factor, "
                "Filter Height Intraline Factor, Filter Width Intraline Factor, Channel "
                "Intraline Factor, Num Filter Intraline Factor, IFMAP Height Intraline Order, "
                "IFMAP Width Intraline Order, Channel Intraline Order, IFMAP Height Interline "
                "Order, IFMAP Width Interline Order, Channel Interline Order, Num Filter "
                "Intraline Order, Channel Intraline Order, Filter Height Intraline Order, "
                "Filter Width Intraline Order, Num Filter Interline Order, Channel Interline "
                "Order, Filter Height Interline Order, Filter Width Interline Order,\n")
        f.write(f"{name},1,{layer[2]},1,1,1,{layer[6]},1,2,0,4,5,3,3,0,1,2,7,4,5,6,\n")
    s = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo,
                 layout=layout)
    s.run_scale(top_path=d)


def scalesim_macs(layer):
    """Useful MACs of the layer as SCALE-Sim runs it (no padding)."""
    _, ih, iw, fh, fw, c, nf, s = layer
    oh = (ih - fh) // s + 1
    ow = (iw - fw) // s + 1
    return oh * ow * fh * fw * c * nf


def tessera_kernel(layer):
    """The layer as torchvision writes it, at batch 1, and its useful MACs."""
    name, ih, iw, fh, fw, c, nf, s = layer
    p = fh // 2
    oh = (ih + 2 * p - fh) // s + 1
    ow = (iw + 2 * p - fw) // s + 1
    text = (
        f"// ResNet-50 layer {name} (SCALE-Sim's topology), torchvision's padding, batch 1.\n"
        f"kernel {name.lower()}(x: bf16[1, {c}, {ih}, {iw}], w: bf16[{nf}, {c}, {fh}, {fw}], "
        f"b: f32[{nf}]) -> bf16[1, {nf}, {oh}, {ow}] {{\n"
        f"    let y = conv(x, w, stride=[{s}, {s}], padding=[{p}, {p}]) "
        f"+ reshape(b, [1, {nf}, 1, 1]);\n"
        f"    return relu(y) as bf16;\n}}\n"
    )
    return text, oh * ow * fh * fw * c * nf


def tessera_cycles(tessera, text, work, name):
    """Tessera's total cycles of a kernel, and its report's latency-aware ceiling (the most
    of Tensor and DMA work by docs/machine.md's costs, with the first load's and the last
    store's latency)."""
    path = os.path.join(work, f"{name}.tsr")
    with open(path, "w") as f:
        f.write(text)
    out = subprocess.run(
        [tessera, "run", path, "--random", "1", "--report"],
        check=True, capture_output=True, text=True,
    )
    text = out.stdout + out.stderr
    m = re.search(r"total (\d+) cycles", text)
    c = re.search(r"ceiling: (\d+) cycles", text)
    if not m or not c:
        sys.exit(f"no cycle count in tessera's report of {name}:\n{text}")
    return int(m.group(1)), int(c.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", default="target/release/tessera")
    ap.add_argument("--work", default="/tmp/tessera-scalesim")
    ap.add_argument("--layers", default="", help="comma-separated layer names (default all)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    pick = set(filter(None, args.layers.split(",")))
    print("| layer | shape | SCALE-Sim OS cycles | OS util | SCALE-Sim WS cycles | WS util "
          "| Tessera cycles | Tessera util | Tessera ceiling util | at or above the best |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|:-:|")
    for layer in LAYERS:
        name, ih, iw, fh, fw, c, nf, s = layer
        if pick and name not in pick:
            continue
        ss_macs = scalesim_macs(layer)
        os_c = scalesim_cycles(layer, "os", args.work)
        ws_c = scalesim_cycles(layer, "ws", args.work)
        text, t_macs = tessera_kernel(layer)
        t_c, t_ceil = tessera_cycles(args.tessera, text, args.work, name)
        os_u = ss_macs / (PE * os_c)
        ws_u = ss_macs / (PE * ws_c)
        t_u = t_macs / (PE * t_c)
        ceil_u = t_macs / (PE * t_ceil)
        ok = "yes" if t_u >= max(os_u, ws_u) else "no"
        shape = f"{fh}x{fw}/{s} {c}->{nf} {ih}x{iw}"
        print(f"| {name} | {shape} | {os_c:,} | {os_u:.3f} | {ws_c:,} | {ws_u:.3f} "
              f"| {t_c:,} | {t_u:.3f} | {ceil_u:.3f} | {ok} |", flush=True)


if __name__ == "__main__":
    main()
