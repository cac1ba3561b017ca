"""The zoo's ResNet (docs/design-notes.md#models) in plain PyTorch, built from a spec JSON.

Post-activation basic blocks (conv3x3 -> BN -> ReLU -> [dropout] -> conv3x3 -> BN, add the
shortcut, ReLU); a 1x1 conv + BN projection whenever the stride or the width changes;
stem conv -> BN -> ReLU; average pool P, flatten, linear. Layers of kind "plain" are
airbench-style blocks instead (conv -> BN -> ReLU -> max-pool(stride) -> conv -> BN -> ReLU,
no shortcut), "plain_pool_first" ones pool right after the first conv (airbench94's order),
"pool_residual" ones are airbench96's three-conv block (conv -> max-pool -> BN -> act, whose
output h feeds conv -> BN -> act -> [dropout] -> conv -> BN, added to h before the last act);
`stem_padding` (even stem kernels included), `head_pool: "max"` and `activation: "gelu"`
are honoured as in the Rust spec. Parameter names match the Rust
`zoo` crate (`stem.conv.weight`, `layer1.block0.shortcut.bn.running_var`, `fc.bias`...),
so weights written by `export_bench_model` load one to one. The input is RGB in [0, 1];
normalisation happens inside `forward`, as in the exported ONNX graph.
"""

import json
import sys

import numpy as np
import torch
from torch import nn

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


class ConvBN(nn.Module):
    def __init__(self, cin, cout, k, stride, padding=None):
        super().__init__()
        pad = k // 2 if padding is None else padding
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x):
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, k, stride, skip_k, dropout, act=None):
        super().__init__()
        self.act = act or nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, k, stride=1, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.shortcut = ConvBN(cin, cout, skip_k, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(self.drop(y)))
        s = x if self.shortcut is None else self.shortcut(x)
        return self.act(y + s)


def activation(spec):
    return nn.GELU() if spec.get("activation", "relu") == "gelu" else nn.ReLU()


class PlainBlock(nn.Module):
    def __init__(self, cin, cout, k, pool, dropout, act=None, pool_first=False):
        super().__init__()
        self.act = act or nn.ReLU()
        self.pool_first = pool_first
        self.conv1 = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5)
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, k, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x):
        if self.pool_first:
            y = self.drop(self.act(self.bn1(self.pool(self.conv1(x)))))
        else:
            y = self.drop(self.pool(self.act(self.bn1(self.conv1(x)))))
        return self.act(self.bn2(self.conv2(y)))


class PoolResidualBlock(nn.Module):
    """airbench96's ConvGroup (Jordan 2024, legacy/airbench96.py): a pool-first head and
    two convs with an identity shortcut around them, the sum activated."""

    def __init__(self, cin, cout, k, pool, dropout, act=None):
        super().__init__()
        self.act = act or nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, k, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv3 = nn.Conv2d(cout, cout, k, padding=k // 2, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x):
        h = self.act(self.bn1(self.pool(self.conv1(x))))
        y = self.drop(self.act(self.bn2(self.conv2(h))))
        return self.act(h + self.bn3(self.conv3(y)))


class ZooResNet(nn.Module):
    def __init__(self, spec):
        super().__init__()
        c1 = spec["stem_channels"]
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        k0, pad0 = spec["stem_kernel"], spec.get("stem_padding")
        self.stem = ConvBN(spec["in_channels"], c1, k0, 1, pad0)
        self.layer_names = []
        pad0 = k0 // 2 if pad0 is None else pad0
        cin, size = c1, spec["input_size"] + 2 * pad0 - k0 + 1
        for i, layer in enumerate(spec["layers"]):
            mod = nn.Module()
            names = []
            for j in range(layer["blocks"]):
                stride = layer["stride"] if j == 0 else 1
                kind = layer.get("kind", "residual")
                if kind == "pool_residual":
                    block = PoolResidualBlock(cin, layer["channels"], layer["conv_kernel"], stride,
                                              spec["dropout"], activation(spec))
                elif kind in ("plain", "plain_pool_first"):
                    block = PlainBlock(cin, layer["channels"], layer["conv_kernel"], stride,
                                       spec["dropout"], activation(spec),
                                       kind == "plain_pool_first")
                else:
                    block = BasicBlock(cin, layer["channels"], layer["conv_kernel"], stride,
                                       layer["skip_kernel"], spec["dropout"], activation(spec))
                setattr(mod, f"block{j}", block)
                names.append(f"block{j}")
                cin = layer["channels"]
            size //= layer["stride"]
            setattr(self, f"layer{i}", mod)
            self.layer_names.append((f"layer{i}", names))
        p = spec["pool"]
        self.pool = nn.MaxPool2d(p) if spec.get("head_pool", "avg") == "max" else nn.AvgPool2d(p)
        feats = cin * (size // spec["pool"]) ** 2
        self.fc = nn.Linear(feats, spec["num_classes"])
        self.act = activation(spec)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = self.act(self.stem(x))
        for lname, bnames in self.layer_names:
            layer = getattr(self, lname)
            for b in bnames:
                x = getattr(layer, b)(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def params(model):
    """Trainable parameters (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def load(spec_path, weights_json=None, weights_bin=None):
    """The network of `spec_path`, with the weights of `export_bench_model` if given."""
    with open(spec_path) as f:
        model = ZooResNet(json.load(f))
    if weights_json:
        with open(weights_json) as f:
            index = json.load(f)
        blob = np.fromfile(weights_bin, dtype="<f4")
        state = {}
        for t in index:
            n = int(np.prod(t["shape"]))
            state[t["name"]] = torch.from_numpy(blob[t["offset"]:t["offset"] + n].copy()).view(t["shape"])
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if not m.endswith("num_batches_tracked") and m not in ("mean", "std")]
        if missing or unexpected:
            raise SystemExit(f"weights do not fit the spec: missing {missing}, unexpected {unexpected}")
    return model.eval()


if __name__ == "__main__":
    m = load(*sys.argv[1:4])
    print(f"{params(m)} trainable parameters")
