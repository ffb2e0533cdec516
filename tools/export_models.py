#!/usr/bin/python3
"""Build the matc benchmark/test models and export them to ONNX.

usage: python3 tools/export_models.py [--out models] [--no-verify] [NAMES...]
       python3 tools/export_models.py --foreign [--out tests/models] [NAMES...]

NAMES is any of mlp, vgg-small, bert-mini, switch-mini (default: all).
With --foreign, NAMES is any of gpt-tiny, resnet-tiny, vit-tiny,
switch-tiny, cnn-bn-train (default: all): small models written the way
other people write PyTorch models (nn.Linear on 3-D activations,
nn.MultiheadAttention, in-graph causal masks, one-hot routing, BatchNorm in
training mode) and exported the usual way, for checking matc on graphs it
was not designed around. The exporter transposes, folds and renames some of
their parameters (e.g. `onnx::MatMul_12` = W^T); map_initializers() maps
each float initializer back to parameters by value (identity, transpose,
reshape, leading rows) and grad_<j>.pb is the correspondingly transformed
parameter gradient, named after the initializer; parameters that cannot be
mapped (or that feed several initializers) are reported, get no grad file,
and are listed in CARD.md. build_foreign(name) rebuilds such a model.
For each model NAME this writes

  OUT/NAME/model.onnx             torch.onnx.export, symbolic batch dim "batch",
                                  constant folding on, initializers embedded
  OUT/NAME/test_data_set_0/
      input_0.pb                  reference input (batch of 2), TensorProto
      output_0.pb                 PyTorch float32 output on input_0
      cotangent_0.pb              seeded N(0,1) tensor, same shape as output
      grad_<j>.pb                 d sum(output*cotangent) / d initializer,
                                  computed by PyTorch autograd in float64 and
                                  stored as float32; .name = initializer name;
                                  j = 0,1,.. over the trainable initializers
                                  in graph.initializer order
  OUT/NAME/CARD.md                description, params, op counts, FLOPs, ...

The module is importable: build(name) -> (torch.nn.Module, example_input)
rebuilds exactly the same seeded model (in eval mode) and its reference input.

Verification (on by default): onnx.checker, re-reading every .pb, checking
that every trainable parameter maps 1:1 to an ONNX initializer holding the
same values, and re-evaluating the exported graph with a small torch-based
ONNX interpreter (float64) against the PyTorch outputs.
"""

import argparse
import math
import os
import sys
import warnings
from collections import Counter

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import onnx
from onnx import numpy_helper, shape_inference

MODEL_NAMES = ["mlp", "vgg-small", "bert-mini", "switch-mini"]
REF_BATCH = 2

# byte-level vocabulary: 256 byte values + 4 special tokens
VOCAB = 260
PAD_ID, MASK_ID, CLS_ID, SEP_ID = 256, 257, 258, 259

SEEDS = {"mlp": 1001, "vgg-small": 1002, "bert-mini": 1003, "switch-mini": 1004}


# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------

class Dense(nn.Module):
    """y = x @ weight + bias with weight stored as [in, out].

    nn.Linear on inputs of rank > 2 exports as MatMul(x, Transpose(W)), and
    constant folding then replaces W by a new, renamed, transposed
    initializer that no longer corresponds to the parameter. Storing the
    weight pre-transposed exports as MatMul(x, W) + b with W kept as-is.
    """

    def __init__(self, d_in, d_out, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_in, d_out))
        self.bias = nn.Parameter(torch.empty(d_out)) if bias else None
        # same init distribution as nn.Linear
        bound = 1.0 / math.sqrt(d_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        y = torch.matmul(x, self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate Q, K, V and output projections."""

    def __init__(self, d_model, n_heads, seq_len, causal=False):
        super().__init__()
        assert d_model % n_heads == 0
        self.d_model, self.n_heads, self.seq_len = d_model, n_heads, seq_len
        self.d_head = d_model // n_heads
        self.q = Dense(d_model, d_model)
        self.k = Dense(d_model, d_model)
        self.v = Dense(d_model, d_model)
        self.o = Dense(d_model, d_model)
        self.causal = causal
        if causal:
            # additive mask: 0 on/below the diagonal, -1e9 above it
            mask = torch.triu(torch.ones(seq_len, seq_len), diagonal=1) * -1e9
            self.register_buffer("causal_mask", mask)

    def _heads(self, t):
        # [B, S, D] -> [B, S, H, Dh] -> [B, H, S, Dh]
        return t.reshape(-1, self.seq_len, self.n_heads, self.d_head).transpose(1, 2)

    def forward(self, x):
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_head)
        if self.causal:
            scores = scores + self.causal_mask
        att = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(att, v)                      # [B, H, S, Dh]
        ctx = ctx.transpose(1, 2).reshape(-1, self.seq_len, self.d_model)
        return self.o(ctx)


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------

class MLP(nn.Module):
    """Fashion-MNIST MLP: 784-256-256-10."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.flatten(x)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class VGGSmall(nn.Module):
    """VGG-style CNN for 28x28 grayscale: [conv3x3-BN-ReLU]x2 + maxpool, three
    stages of 32/64/128 channels (28->14->7->3), then flatten 1152 -> 1024 -> 10."""

    def __init__(self, widths=(32, 64, 128), hidden=1024, n_classes=10):
        super().__init__()
        layers, c_in = [], 1
        for w in widths:
            for _ in range(2):
                layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False),
                           nn.BatchNorm2d(w), nn.ReLU()]
                c_in = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c_in * 3 * 3, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x):
        x = self.flatten(self.features(x))
        return self.fc2(F.relu(self.fc1(x)))


class BertLayer(nn.Module):
    """Post-LN BERT encoder layer."""

    def __init__(self, d_model, n_heads, d_ff, seq_len):
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, seq_len)
        self.ln1 = nn.LayerNorm(d_model, eps=1e-12)
        self.ff1 = Dense(d_model, d_ff)
        self.ff2 = Dense(d_ff, d_model)
        self.ln2 = nn.LayerNorm(d_model, eps=1e-12)

    def forward(self, x):
        x = self.ln1(x + self.attn(x))
        x = self.ln2(x + self.ff2(F.gelu(self.ff1(x))))
        return x


class BertMini(nn.Module):
    """BERT encoder (post-LN, exact GELU) with a masked-LM head, byte vocab."""

    def __init__(self, n_layers=4, d_model=256, n_heads=4, d_ff=512, seq_len=128,
                 vocab=VOCAB):
        super().__init__()
        # no padding_idx: keeps PyTorch's embedding gradient equal to the
        # plain Gather gradient of the exported graph
        self.tok_emb = nn.Embedding(vocab, d_model)
        # learned positions added as a whole [S, D] parameter (an index/slice
        # into it would be constant-folded into an unnamed initializer)
        self.pos_emb = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        self.emb_ln = nn.LayerNorm(d_model, eps=1e-12)
        self.layers = nn.ModuleList(
            [BertLayer(d_model, n_heads, d_ff, seq_len) for _ in range(n_layers)])
        self.mlm_dense = Dense(d_model, d_model)
        self.mlm_ln = nn.LayerNorm(d_model, eps=1e-12)
        self.mlm_out = Dense(d_model, vocab)

    def forward(self, input_ids):
        x = self.emb_ln(self.tok_emb(input_ids) + self.pos_emb)
        for layer in self.layers:
            x = layer(x)
        x = self.mlm_ln(F.gelu(self.mlm_dense(x)))
        return self.mlm_out(x)


class Expert(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.fc1 = Dense(d_model, d_ff)
        self.fc2 = Dense(d_ff, d_model)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class SwitchFFN(nn.Module):
    """Switch-style top-1 mixture of experts, computed densely: every expert
    runs on every token and the outputs are combined with
    gate_e = softmax(router(x))_e * [argmax == e]."""

    def __init__(self, d_model, d_ff, n_experts):
        super().__init__()
        self.n_experts = n_experts
        self.router = Dense(d_model, n_experts)
        self.experts = nn.ModuleList([Expert(d_model, d_ff) for _ in range(n_experts)])
        self.register_buffer("expert_ids", torch.arange(n_experts))

    def forward(self, x):
        probs = torch.softmax(self.router(x), dim=-1)             # [B, S, E]
        top = torch.argmax(probs, dim=-1, keepdim=True)           # [B, S, 1]
        gates = probs * (top == self.expert_ids).to(probs.dtype)  # [B, S, E]
        out = None
        for e, expert in enumerate(self.experts):
            y = gates[..., e:e + 1] * expert(x)
            out = y if out is None else out + y
        return out


class SwitchBlock(nn.Module):
    """Pre-LN causal transformer block with a Switch MoE FFN."""

    def __init__(self, d_model, n_heads, d_ff, n_experts, seq_len):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, seq_len, causal=True)
        self.ln2 = nn.LayerNorm(d_model)
        self.moe = SwitchFFN(d_model, d_ff, n_experts)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.moe(self.ln2(x))
        return x


class SwitchMini(nn.Module):
    """Small causal (GPT-style, pre-LN) transformer with top-1 MoE FFNs."""

    def __init__(self, n_layers=2, d_model=128, n_heads=4, d_ff=256, n_experts=4,
                 seq_len=64, vocab=VOCAB):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d_model)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        self.pos_emb = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        self.blocks = nn.ModuleList(
            [SwitchBlock(d_model, n_heads, d_ff, n_experts, seq_len) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = Dense(d_model, vocab)

    def forward(self, input_ids):
        x = self.tok_emb(input_ids) + self.pos_emb
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------

SPECS = {
    "mlp": dict(
        cls=MLP, opset=13, input_name="input", input_shape=(1, 28, 28), kind="image",
        desc="Fashion-MNIST multilayer perceptron: Flatten -> Linear(784,256) -> ReLU -> "
             "Linear(256,256) -> ReLU -> Linear(256,10). Linear layers on 2-D input export as "
             "Gemm(transB=1)."),
    "vgg-small": dict(
        cls=VGGSmall, opset=13, input_name="input", input_shape=(1, 28, 28), kind="image",
        desc="VGG-style CNN for 28x28 grayscale images (Fashion-MNIST): three stages of "
             "[Conv3x3(pad 1, no bias) -> BatchNorm -> ReLU] x 2 -> MaxPool2x2 with 32, 64, 128 "
             "channels (28 -> 14 -> 7 -> 3), then Flatten(1152) -> Linear(1152,1024) -> ReLU -> "
             "Linear(1024,10). Exported in eval mode with TrainingMode.PRESERVE, so BatchNorm "
             "stays as inference-mode BatchNormalization nodes (running mean/var are "
             "non-trainable initializers) rather than being fused into the convolutions."),
    "bert-mini": dict(
        cls=BertMini, opset=14, input_name="input_ids", input_shape=(128,), kind="tokens",
        desc="BERT encoder with masked-LM head over a byte vocabulary of 260 tokens (256 bytes + "
             "PAD=256, MASK=257, CLS=258, SEP=259): token embedding + learned position embedding "
             "[128,256] -> LayerNorm, 4 post-LN encoder layers (d_model 256, 4 heads of 64, FFN "
             "512, exact erf GELU, LayerNorm eps 1e-12), attention written out explicitly "
             "(separate Q/K/V/output projections, reshape [B,S,H,Dh] -> transpose, "
             "softmax(QK^T/sqrt(64)) V, no attention mask). MLM head: Linear(256,256) -> GELU -> "
             "LayerNorm -> Linear(256,260) (untied). Projections are `Dense` modules "
             "(y = x @ W + b with W stored [in,out]) so that each weight is exported as an "
             "initializer of its own. Opset 14, so LayerNorm is decomposed "
             "(ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add)."),
    "switch-mini": dict(
        cls=SwitchMini, opset=13, input_name="input_ids", input_shape=(64,), kind="tokens",
        desc="Small causal pre-LN transformer (2 layers, d_model 128, 4 heads of 32, seq 64, "
             "byte vocabulary 260) whose FFNs are Switch-style top-1 mixtures of 4 experts "
             "(each expert Linear(128,256) -> ReLU -> Linear(256,128)). Router Linear(128,4) -> "
             "softmax -> argmax; gate_e = prob_e * [argmax == e]; output = sum_e gate_e * "
             "expert_e(x), computed densely (every expert runs on every token) so the graph is "
             "static. Causal mask is an additive [64,64] buffer (-1e9 above the diagonal, "
             "exported as a non-trainable initializer). Learned position embedding [64,128], "
             "final LayerNorm, untied Linear(128,260) head. LayerNorm is decomposed at opset 13."),
}


def build(name):
    """Rebuild the seeded model `name` (eval mode, float32) and its reference
    input (batch of REF_BATCH). Returns (module, example_input)."""
    if name not in SPECS:
        raise ValueError("unknown model %r (have %s)" % (name, ", ".join(MODEL_NAMES)))
    spec = SPECS[name]
    torch.manual_seed(SEEDS[name])
    model = spec["cls"]().float()
    if name == "vgg-small":
        # give BatchNorm non-trivial running statistics and affine params so
        # the inference-mode BN is actually exercised
        g = torch.Generator().manual_seed(SEEDS[name] + 7)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                with torch.no_grad():
                    m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                    m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    model.eval()
    g = torch.Generator().manual_seed(SEEDS[name] + 1)
    shape = (REF_BATCH,) + spec["input_shape"]
    if spec["kind"] == "image":
        x = torch.rand(shape, generator=g, dtype=torch.float32)
    else:
        x = torch.randint(0, VOCAB, shape, generator=g, dtype=torch.int64)
    return model, x


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------

def export_onnx(model, x, name, path):
    spec = SPECS[name]
    in_name = spec["input_name"]
    # With the model in eval mode torch.onnx merges initializers that hold
    # equal values (e.g. every LayerNorm weight starts as all ones), which
    # would tie parameters that PyTorch trains separately. In training mode
    # it only merges initializers that are the same tensor. So models
    # without mode-dependent modules are exported in training mode (which
    # changes nothing else for them); models with BatchNorm/Dropout are
    # exported in eval mode, and trainable_initializers() then checks that
    # every parameter kept an initializer of its own.
    mode_dependent = any(isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.Dropout))
                         for mod in model.modules())
    was_training = model.training
    model.train(not mode_dependent)
    try:
        _export_onnx(model, x, spec, in_name, path)
    finally:
        model.train(was_training)
    # The exporter's own shape inference loses the (static) sequence length
    # of the output after Reshape(-1, S, ...) and names it e.g.
    # "Addlogits_dim_1"; write the known output shape [batch, ...] back.
    with torch.no_grad():
        y = model(x)
    m = onnx.load(path)
    out = m.graph.output[0]
    dims = out.type.tensor_type.shape.dim
    assert len(dims) == y.dim()
    for i, d in enumerate(dims):
        if i == 0:
            d.dim_param = "batch"
        else:
            d.dim_value = y.shape[i]
    onnx.save(m, path)


def _export_onnx(model, x, spec, in_name, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), path,
            export_params=True,
            keep_initializers_as_inputs=False,
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.PRESERVE,  # see export_onnx()
            opset_version=spec["opset"],
            input_names=[in_name],
            output_names=["logits"],
            dynamic_axes={in_name: {0: "batch"}, "logits": {0: "batch"}},
        )


def save_tensor(arr, name, path):
    t = numpy_helper.from_array(np.ascontiguousarray(arr), name=name)
    with open(path, "wb") as f:
        f.write(t.SerializeToString())


def load_tensor(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t


def trainable_initializers(model, onnx_model):
    """Map the ONNX initializers to torch parameters.

    Returns (mapped, unmapped_params, other_inits): mapped is a list of
    (init_name, param_name) in graph.initializer order for initializers that
    are trainable float parameters; unmapped_params are trainable parameters
    with no initializer of the same name and value; other_inits are the
    remaining initializers (buffers, folded constants)."""
    params = dict(model.named_parameters())
    mapped, other = [], []
    for init in onnx_model.graph.initializer:
        p = params.get(init.name)
        if p is not None and p.requires_grad:
            arr = numpy_helper.to_array(init)
            if tuple(arr.shape) != tuple(p.shape) or not np.array_equal(
                    arr, p.detach().cpu().numpy()):
                raise RuntimeError("initializer %s differs from parameter" % init.name)
            mapped.append((init.name, init.name))
        else:
            other.append(init.name)
    names = {m[0] for m in mapped}
    unmapped = [n for n, p in params.items() if p.requires_grad and n not in names]
    return mapped, unmapped, other


def reference_grads(name, x, cot):
    """float64 autograd of sum(model(x) * cot) w.r.t. every parameter."""
    model, _ = build(name)
    model = model.double()
    model.eval()
    xx = x.double() if x.is_floating_point() else x
    out = model(xx)
    (out * cot.double()).sum().backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------
# FLOPs / op counts
# --------------------------------------------------------------------------

def _dims(vi_type, batch=1):
    shp = vi_type.tensor_type.shape
    out = []
    for d in shp.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.dim_param == "batch":
            out.append(batch)
        else:
            return None
    return out


def flops_per_sample(onnx_model):
    """Forward FLOPs for batch 1: 2*MACs of MatMul, Gemm and Conv nodes."""
    m1 = onnx.ModelProto()
    m1.CopyFrom(onnx_model)
    for vi in list(m1.graph.input) + list(m1.graph.output):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param == "batch":
                d.dim_value = 1           # fixes the batch so that Reshape(-1) infers
    inferred = shape_inference.infer_shapes(m1, strict_mode=True)
    g = inferred.graph
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        shapes[vi.name] = _dims(vi.type)
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    breakdown = Counter()
    for node in g.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        a = shapes.get(node.input[0])
        b = shapes.get(node.input[1])
        y = shapes.get(node.output[0])
        if a is None or b is None or y is None:
            raise RuntimeError("no shape for %s node %s" % (node.op_type, node.name))
        if node.op_type == "MatMul":
            k = a[-1]
            macs = int(np.prod(y)) * k
        elif node.op_type == "Gemm":
            ta = next((at.i for at in node.attribute if at.name == "transA"), 0)
            k = a[0] if ta else a[1]
            macs = int(np.prod(y)) * k
        else:  # Conv: weight [M, C/group, kh, kw]
            macs = int(np.prod(y)) * int(np.prod(b[1:]))
        total += 2 * macs
        breakdown[node.op_type] += 2 * macs
    return total, breakdown


def op_counts(onnx_model):
    return Counter(n.op_type for n in onnx_model.graph.node)


# --------------------------------------------------------------------------
# a small ONNX interpreter (torch ops, float64) for verifying the export
# --------------------------------------------------------------------------

_ONNX_TO_TORCH_DTYPE = {
    onnx.TensorProto.FLOAT: torch.float64,   # evaluate float graphs in float64
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.BOOL: torch.bool,
}


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _as_tensor(arr):
    t = torch.from_numpy(np.array(arr))
    return t.double() if t.is_floating_point() else t


def _norm_axis(axis, rank):
    return axis + rank if axis < 0 else axis


def run_onnx_reference(onnx_model, feeds, grad_inits=None, trace=None):
    """Evaluate the graph on `feeds` (name -> tensor). Floats run in float64.
    If grad_inits (a dict) is given, every float initializer is made a leaf
    requiring grad and stored in it by name. If trace (a list) is given,
    (node, input shapes, output shape) is appended for every node."""
    env = {}
    for init in onnx_model.graph.initializer:
        env[init.name] = _as_tensor(numpy_helper.to_array(init))
        if grad_inits is not None and env[init.name].is_floating_point():
            env[init.name].requires_grad_(True)
            grad_inits[init.name] = env[init.name]
    for k, v in feeds.items():
        env[k] = v.double() if v.is_floating_point() else v
    env[""] = None
    for node in onnx_model.graph.node:
        ins = [env[i] for i in node.input]
        at = _attrs(node)
        op = node.op_type
        if op == "Constant":
            r = _as_tensor(numpy_helper.to_array(at["value"]))
        elif op == "Identity":
            r = ins[0]
        elif op in ("Add", "Sub", "Mul", "Div", "Pow", "Equal"):
            a, b = ins
            r = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul,
                 "Pow": torch.pow, "Equal": torch.eq}.get(op, None)
            if op == "Div":
                r = torch.div(a, b, rounding_mode="trunc") if not a.is_floating_point() \
                    else a / b
            else:
                r = r(a, b)
        elif op == "Sqrt":
            r = torch.sqrt(ins[0])
        elif op == "Erf":
            r = torch.erf(ins[0])
        elif op == "Relu":
            r = torch.relu(ins[0])
        elif op == "Tanh":
            r = torch.tanh(ins[0])
        elif op == "Neg":
            r = -ins[0]
        elif op == "MatMul":
            r = torch.matmul(ins[0], ins[1])
        elif op == "Gemm":
            a, b = ins[0], ins[1]
            if at.get("transA", 0):
                a = a.t()
            if at.get("transB", 0):
                b = b.t()
            r = at.get("alpha", 1.0) * (a @ b)
            if len(ins) > 2 and ins[2] is not None:
                r = r + at.get("beta", 1.0) * ins[2]
        elif op == "Conv":
            pads = at.get("pads", [0, 0, 0, 0])
            assert pads[0] == pads[2] and pads[1] == pads[3], "asymmetric pads"
            r = F.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                         stride=at.get("strides", [1, 1]), padding=pads[:2],
                         dilation=at.get("dilations", [1, 1]), groups=at.get("group", 1))
        elif op == "BatchNormalization":
            x, s, b, m, v = ins
            eps = at.get("epsilon", 1e-5)
            shp = [1, -1] + [1] * (x.dim() - 2)
            if at.get("training_mode", 0):
                red = [0] + list(range(2, x.dim()))
                m = x.mean(dim=red)
                v = x.var(dim=red, unbiased=False)
            r = (x - m.reshape(shp)) / torch.sqrt(v.reshape(shp) + eps) * s.reshape(shp) \
                + b.reshape(shp)
        elif op == "MaxPool":
            pads = at.get("pads", [0, 0, 0, 0])
            assert pads[0] == pads[2] and pads[1] == pads[3], "asymmetric pads"
            r = F.max_pool2d(ins[0], at["kernel_shape"], stride=at.get("strides"),
                             padding=pads[:2], dilation=at.get("dilations", [1, 1]),
                             ceil_mode=bool(at.get("ceil_mode", 0)))
        elif op == "GlobalAveragePool":
            r = ins[0].mean(dim=tuple(range(2, ins[0].dim())), keepdim=True)
        elif op == "Flatten":
            ax = _norm_axis(at.get("axis", 1), ins[0].dim())
            r = ins[0].reshape(int(np.prod(ins[0].shape[:ax])), -1)
        elif op == "Reshape":
            shape = [int(s) for s in ins[1].tolist()]
            if not at.get("allowzero", 0):
                shape = [ins[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
            r = ins[0].reshape(shape)
        elif op == "Transpose":
            r = ins[0].permute(*at.get("perm", list(range(ins[0].dim() - 1, -1, -1))))
        elif op == "Softmax":
            r = torch.softmax(ins[0], dim=at.get("axis", -1))
        elif op == "ReduceMean":
            axes = at.get("axes") if "axes" in at else (ins[1].tolist() if len(ins) > 1 else None)
            axes = list(range(ins[0].dim())) if axes is None else axes
            r = ins[0].mean(dim=tuple(axes), keepdim=bool(at.get("keepdims", 1)))
        elif op == "ArgMax":
            assert not at.get("select_last_index", 0)
            r = torch.argmax(ins[0], dim=at.get("axis", 0), keepdim=bool(at.get("keepdims", 1)))
        elif op == "Cast":
            r = ins[0].to(_ONNX_TO_TORCH_DTYPE[at["to"]])
        elif op == "Gather":
            ax = _norm_axis(at.get("axis", 0), ins[0].dim())
            idx = ins[1]
            idx = torch.where(idx < 0, idx + ins[0].shape[ax], idx)
            r = torch.index_select(ins[0], ax, idx.reshape(-1))
            r = r.reshape(ins[0].shape[:ax] + idx.shape + ins[0].shape[ax + 1:])
        elif op == "Slice":
            data = ins[0]
            starts, ends = ins[1].tolist(), ins[2].tolist()
            axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None \
                else list(range(len(starts)))
            steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
            idx = [slice(None)] * data.dim()
            for s, e, a, st in zip(starts, ends, axes, steps):
                assert st == 1, "only step 1 supported"
                a = _norm_axis(a, data.dim())
                n = data.shape[a]
                s = max(0, min(n, s + n if s < 0 else s))
                e = max(0, min(n, e + n if e < 0 else e))
                idx[a] = slice(s, e)
            r = data[tuple(idx)]
        elif op == "Unsqueeze":
            axes = at.get("axes") if "axes" in at else ins[1].tolist()
            r = ins[0]
            rank = r.dim() + len(axes)
            for a in sorted(_norm_axis(a, rank) for a in axes):
                r = r.unsqueeze(a)
        elif op == "Squeeze":
            axes = at.get("axes") if "axes" in at else ins[1].tolist()
            r = ins[0]
            for a in sorted((_norm_axis(a, r.dim()) for a in axes), reverse=True):
                r = r.squeeze(a)
        elif op == "Shape":
            r = torch.tensor(list(ins[0].shape), dtype=torch.int64)
        elif op == "Concat":
            r = torch.cat(ins, dim=at["axis"])
        elif op == "Where":
            r = torch.where(ins[0], ins[1], ins[2])
        elif op == "Range":
            r = torch.arange(ins[0].item(), ins[1].item(), ins[2].item(), dtype=ins[0].dtype)
        elif op == "ConstantOfShape":
            v = at.get("value")
            v = _as_tensor(numpy_helper.to_array(v)) if v is not None else \
                torch.zeros(1, dtype=torch.float64)
            r = v.reshape(()).expand(*[int(s) for s in ins[0].tolist()]).clone()
        elif op == "Trilu":
            k = int(ins[1].item()) if len(ins) > 1 and ins[1] is not None else 0
            r = torch.triu(ins[0], k) if at.get("upper", 1) else torch.tril(ins[0], k)
        elif op == "Split":
            ax = _norm_axis(at.get("axis", 0), ins[0].dim())
            sizes = at.get("split") if "split" in at else \
                (ins[1].tolist() if len(ins) > 1 and ins[1] is not None else None)
            if sizes is None:
                sizes = [ins[0].shape[ax] // len(node.output)] * len(node.output)
            r = tuple(torch.split(ins[0], [int(s) for s in sizes], dim=ax))
        elif op == "Expand":
            shape = [int(s) for s in ins[1].tolist()]
            r = ins[0] * torch.ones(shape, dtype=ins[0].dtype) if ins[0].is_floating_point() \
                else ins[0].expand(torch.broadcast_shapes(tuple(ins[0].shape), tuple(shape)))
        elif op == "OneHot":
            idx, depth, values = ins
            depth = int(depth.item())
            idx = torch.where(idx < 0, idx + depth, idx).long()
            assert at.get("axis", -1) == -1
            oh = F.one_hot(idx, depth).to(torch.bool)
            r = torch.where(oh, values[1], values[0])
        elif op in ("ReduceSum",):
            axes = at.get("axes") if "axes" in at else \
                (ins[1].tolist() if len(ins) > 1 and ins[1] is not None else None)
            axes = list(range(ins[0].dim())) if axes is None else axes
            r = ins[0].sum(dim=tuple(axes), keepdim=bool(at.get("keepdims", 1)))
        elif op == "Not":
            r = ~ins[0]
        elif op in ("Less", "Greater"):
            r = (torch.lt if op == "Less" else torch.gt)(ins[0], ins[1])
        elif op == "Erf":
            r = torch.erf(ins[0])
        elif op == "Sigmoid":
            r = torch.sigmoid(ins[0])
        elif op == "Dropout":
            r = ins[0]
        else:
            raise NotImplementedError("reference interpreter: op %s" % op)
        if trace is not None:
            trace.append((node, [tuple(i.shape) if i is not None else None for i in ins],
                          tuple(r[0].shape) if isinstance(r, tuple) else tuple(r.shape)))
        if isinstance(r, tuple):
            assert len(r) == len(node.output), op
            for o, t in zip(node.output, r):
                env[o] = t
            continue
        assert len(node.output) == 1 or op in ("BatchNormalization", "Dropout"), op
        env[node.output[0]] = r
    return [env[o.name] for o in onnx_model.graph.output]


# --------------------------------------------------------------------------
# per-model driver
# --------------------------------------------------------------------------

def _fmt_int(n):
    return "{:,}".format(n)


def _shape_str(vi):
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        dims.append(d.dim_param if d.HasField("dim_param") else str(d.dim_value))
    return "[" + ", ".join(dims) + "]"


def _elem_type(vi):
    return onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()


def write_card(name, path, onnx_model, n_params, ops, flops, breakdown, mapped, other,
               file_size, out_dir):
    spec = SPECS[name]
    g = onnx_model.graph
    opset = next(o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx"))
    lines = []
    lines.append("# %s" % name)
    lines.append("")
    lines.append(spec["desc"])
    lines.append("")
    lines.append("| | |")
    lines.append("|---|---|")
    lines.append("| trainable parameters | %s |" % _fmt_int(n_params))
    lines.append("| model.onnx size | %s bytes (%.2f MiB) |" % (_fmt_int(file_size),
                                                                file_size / 2 ** 20))
    lines.append("| opset | %d (producer %s %s) |" % (opset, onnx_model.producer_name,
                                                     onnx_model.producer_version))
    for vi in g.input:
        lines.append("| input | `%s` %s %s |" % (vi.name, _elem_type(vi), _shape_str(vi)))
    for vi in g.output:
        lines.append("| output | `%s` %s %s |" % (vi.name, _elem_type(vi), _shape_str(vi)))
    lines.append("| forward FLOPs / sample | %s (%.2f MFLOP; 2*MACs of %s) |" % (
        _fmt_int(flops), flops / 1e6,
        ", ".join("%s %s" % (k, _fmt_int(v)) for k, v in sorted(breakdown.items()))))
    lines.append("| nodes | %d |" % len(g.node))
    lines.append("| initializers | %d (%d trainable, %d other) |" % (
        len(g.initializer), len(mapped), len(other)))
    lines.append("| torch.manual_seed | %d |" % SEEDS[name])
    lines.append("")
    lines.append("## Op types")
    lines.append("")
    lines.append("| op | count |")
    lines.append("|---|---|")
    for op, c in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append("| %s | %d |" % (op, c))
    lines.append("")
    lines.append("## Test data (`test_data_set_0/`)")
    lines.append("")
    lines.append("- `input_0.pb`: reference input, batch %d (%s)." % (
        REF_BATCH, "uniform [0,1) pixels" if spec["kind"] == "image"
        else "uniform random token ids in [0,%d)" % VOCAB))
    lines.append("- `output_0.pb`: PyTorch float32 output `logits` on that input.")
    lines.append("- `cotangent_0.pb`: seeded N(0,1) tensor with the shape of `logits`.")
    lines.append("- `grad_<j>.pb` (j = 0..%d): gradient of sum(logits * cotangent) with respect "
                 "to the j-th trainable initializer (graph.initializer order), computed by "
                 "PyTorch autograd in float64 on the same weights and stored as float32; the "
                 "TensorProto name is the initializer name." % (len(mapped) - 1))
    if other:
        lines.append("- Initializers without a gradient file (buffers / folded constants): %s."
                     % ", ".join("`%s`" % o for o in other))
    lines.append("")
    lines.append("## How it was made")
    lines.append("")
    lines.append("```")
    lines.append("/usr/bin/python3 tools/export_models.py --out %s %s" % (out_dir, name))
    lines.append("```")
    lines.append("")
    lines.append("torch %s, onnx %s; `torch.onnx.export(..., opset_version=%d, "
                 "do_constant_folding=True, keep_initializers_as_inputs=False, "
                 "training=TrainingMode.PRESERVE, dynamic_axes={'%s': {0: 'batch'}, "
                 "'logits': {0: 'batch'}})` with the model in %s. "
                 "`build('%s')` in tools/export_models.py rebuilds the same model (in eval "
                 "mode) and reference input." % (
                     torch.__version__, onnx.__version__, spec["opset"], spec["input_name"],
                     "eval mode (it has BatchNorm, which must export as inference-mode "
                     "BatchNormalization)" if name == "vgg-small" else
                     "training mode (it has no train/eval-dependent modules; in eval mode "
                     "the exporter would merge initializers with equal values, such as the "
                     "all-ones LayerNorm weights, tying parameters)", name))
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def export_one(name, out_root, verify=True):
    spec = SPECS[name]
    d = os.path.join(out_root, name)
    td = os.path.join(d, "test_data_set_0")
    os.makedirs(td, exist_ok=True)
    for fn in os.listdir(td):
        if fn.endswith(".pb"):
            os.remove(os.path.join(td, fn))
    onnx_path = os.path.join(d, "model.onnx")

    model, x = build(name)
    with torch.no_grad():
        y = model(x)
    export_onnx(model, x, name, onnx_path)

    m = onnx.load(onnx_path)
    onnx.checker.check_model(m)
    mapped, unmapped, other = trainable_initializers(model, m)
    if unmapped:
        raise RuntimeError("%s: parameters without an ONNX initializer: %s" % (name, unmapped))
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    in_name = m.graph.input[0].name
    assert in_name == spec["input_name"], in_name
    assert m.graph.output[0].name == "logits"
    save_tensor(x.numpy(), in_name, os.path.join(td, "input_0.pb"))
    save_tensor(y.numpy().astype(np.float32), "logits", os.path.join(td, "output_0.pb"))

    gc = torch.Generator().manual_seed(SEEDS[name] + 2)
    cot = torch.randn(y.shape, generator=gc, dtype=torch.float32)
    save_tensor(cot.numpy(), "logits", os.path.join(td, "cotangent_0.pb"))
    grads = reference_grads(name, x, cot)
    for j, (init_name, pname) in enumerate(mapped):
        save_tensor(grads[pname].numpy().astype(np.float32), init_name,
                    os.path.join(td, "grad_%d.pb" % j))

    ops = op_counts(m)
    flops, breakdown = flops_per_sample(m)
    file_size = os.path.getsize(onnx_path)
    write_card(name, os.path.join(d, "CARD.md"), m, n_params, ops, flops, breakdown,
               mapped, other, file_size, os.path.relpath(out_root))

    if verify:
        verify_one(name, out_root, model, x, y, grads, mapped)

    print("%-12s params %9s  model.onnx %10s bytes  %.1f MFLOP/sample  opset %d  grads %d  "
          "ops %s" % (name, _fmt_int(n_params), _fmt_int(file_size), flops / 1e6,
                      spec["opset"], len(mapped),
                      " ".join("%s:%d" % kv for kv in sorted(ops.items()))))
    return dict(params=n_params, size=file_size, ops=ops, flops=flops, other=other)


def verify_one(name, out_root, model, x, y, grads, mapped):
    d = os.path.join(out_root, name)
    td = os.path.join(d, "test_data_set_0")
    m = onnx.load(os.path.join(d, "model.onnx"))
    onnx.checker.check_model(m, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    # symbolic batch
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch", vi
        assert all(d.HasField("dim_value") for d in dims[1:]), vi
    assert [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim[1:]] == \
        list(y.shape[1:])
    # re-read test data
    xin = numpy_helper.to_array(load_tensor(os.path.join(td, "input_0.pb"))).copy()
    assert load_tensor(os.path.join(td, "input_0.pb")).name == m.graph.input[0].name
    assert np.array_equal(xin, x.numpy())
    yout = numpy_helper.to_array(load_tensor(os.path.join(td, "output_0.pb")))
    assert yout.dtype == np.float32 and np.array_equal(yout, y.numpy())
    cot = numpy_helper.to_array(load_tensor(os.path.join(td, "cotangent_0.pb")))
    assert cot.shape == yout.shape and cot.dtype == np.float32
    inits = {t.name: t for t in m.graph.initializer}
    for j, (init_name, pname) in enumerate(mapped):
        t = load_tensor(os.path.join(td, "grad_%d.pb" % j))
        assert t.name == init_name and t.data_type == onnx.TensorProto.FLOAT
        g = numpy_helper.to_array(t)
        assert list(g.shape) == list(inits[init_name].dims), (init_name, g.shape)
        assert np.array_equal(g, grads[pname].numpy().astype(np.float32))
        assert np.isfinite(g).all()
    assert not os.path.exists(os.path.join(td, "grad_%d.pb" % len(mapped)))

    # the exported graph computes what PyTorch computes
    # (float64 interpreter vs float64 PyTorch: should agree up to the float32
    # constants in the graph, e.g. GELU's sqrt(2) and LayerNorm's epsilon)
    leaves = {}
    (r,) = run_onnx_reference(m, {m.graph.input[0].name: torch.from_numpy(xin)}, leaves)
    model64 = build(name)[0].double()
    with torch.no_grad():
        y64 = model64(x.double() if x.is_floating_point() else x)
    scale = y64.abs().max().item()
    err = (r.detach() - y64).abs().max().item()
    if not err <= 1e-6 * max(1.0, scale):
        raise RuntimeError("%s: ONNX graph vs PyTorch (f64) max abs err %g" % (name, err))
    # stored float32 output vs float64 PyTorch
    err32 = (y64 - y.double()).abs().max().item()
    if not err32 <= 1e-4 * max(1.0, scale):
        raise RuntimeError("%s: float32 output vs float64 max abs err %g" % (name, err32))
    # gradients of the ONNX graph w.r.t. its initializers vs the grad files
    (r * torch.from_numpy(cot.copy()).double()).sum().backward()
    gerr = 0.0
    for j, (init_name, _) in enumerate(mapped):
        g = torch.from_numpy(numpy_helper.to_array(
            load_tensor(os.path.join(td, "grad_%d.pb" % j))).copy()).double()
        gref = leaves[init_name].grad
        if gref is None:
            gref = torch.zeros_like(g)
        e = (g - gref).abs().max().item()
        tol = 1e-6 * max(1.0, gref.abs().max().item())
        if not e <= tol:
            raise RuntimeError("%s: grad of %s differs from ONNX-graph autograd by %g"
                               % (name, init_name, e))
        gerr = max(gerr, e)
    zero = [n for n, _ in mapped if leaves[n].grad is None or not leaves[n].grad.any()]
    # dynamic batch: the graph also runs with batch 1 and 3
    for b in (1, 3):
        xb = x[:1].repeat((b,) + (1,) * (x.dim() - 1))
        (rb,) = run_onnx_reference(m, {m.graph.input[0].name: xb})
        with torch.no_grad():
            yb = model(xb)
        assert tuple(rb.shape) == tuple(yb.shape)
        with torch.no_grad():
            yb64 = model64(xb.double() if xb.is_floating_point() else xb)
        assert (rb - yb64).abs().max().item() <= 1e-6 * max(1.0, scale)
    # MoE: make sure the reference input actually routes to several experts
    extra = ""
    if name == "switch-mini":
        used = set()
        hooks = []
        for blk in model.blocks:
            hooks.append(blk.moe.router.register_forward_hook(
                lambda mod, inp, out: used.update(torch.argmax(out, -1).flatten().tolist())))
        with torch.no_grad():
            model(x)
        for h in hooks:
            h.remove()
        extra = ", experts used %s" % sorted(used)
    if zero:
        extra += ", all-zero grads: %s" % zero
    print("  verified %s: checker ok, %d .pb re-read, ONNX(f64)-vs-torch(f64) max err %.1e, "
          "output f32-vs-f64 %.1e, grads vs ONNX-graph autograd %.1e, batch 1/3 ok%s"
          % (name, 3 + len(mapped), err, err32, gerr, extra))


# --------------------------------------------------------------------------
# "foreign" models: written the way other people write PyTorch models
# (nn.Linear on 3-D inputs, nn.MultiheadAttention, in-graph causal masks,
# F.one_hot routing, BatchNorm in training mode), exported the usual way.
# The exporter transposes/folds/renames some parameters; map_initializers()
# maps every float initializer back to parameters by value.
# --------------------------------------------------------------------------

FOREIGN_NAMES = ["gpt-tiny", "resnet-tiny", "vit-tiny", "switch-tiny", "cnn-bn-train"]
FOREIGN_OUT = os.path.join("tests", "models")


class CausalSelfAttention(nn.Module):
    """nanoGPT-style: fused c_attn Linear, split, view/transpose into heads,
    causal mask built in forward with torch.triu + masked_fill(-inf)."""

    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.n_embd = n_head, n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=1)
        att = att.masked_fill(mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class GPTMLP(nn.Module):
    def __init__(self, n_embd, dropout):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class GPTBlock(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = GPTMLP(n_embd, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPTTiny(nn.Module):
    """nanoGPT-style causal LM: char vocabulary 65, block_size 32 (the
    reference sequence is 16), 2 pre-LN layers, d 32, 2 heads, untied head."""

    def __init__(self, vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32,
                 dropout=0.1):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList([GPTBlock(n_embd, n_head, dropout) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx):
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        tok_emb = self.transformer.wte(idx)
        pos_emb = self.transformer.wpe(pos)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        return self.lm_head(x)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNetTiny(nn.Module):
    """torchvision-style ResNet for 16x16 RGB: conv3x3(16)-BN-ReLU stem, three
    BasicBlocks 16 -> 32 (stride 2, 1x1 conv + BN shortcut) -> 64 (stride 2,
    1x1 conv + BN shortcut), AdaptiveAvgPool2d(1), flatten, Linear(64, 10)."""

    def __init__(self, widths=(16, 32, 64), n_classes=10):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(widths[0], 1)
        self.layer2 = self._make_layer(widths[1], 2)
        self.layer3 = self._make_layer(widths[2], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[2], n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))
        block = BasicBlock(self.inplanes, planes, stride, downsample)
        self.inplanes = planes
        return block

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class ViTTiny(nn.Module):
    """timm-style ViT: Conv2d patch embedding (4x4, stride 4) on 16x16 images
    -> 16 tokens, class token, learned position embedding [1,17,32],
    nn.TransformerEncoder of 2 pre-LN nn.TransformerEncoderLayers (d 32,
    2 heads, FFN 64, exact GELU, batch_first), final LayerNorm, Linear head
    on the class token."""

    def __init__(self, img=16, patch=4, d=32, depth=2, heads=2, mlp=64, n_classes=10):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, kernel_size=patch, stride=patch)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, d))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=mlp, dropout=0.1,
                                           activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=depth)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)       # [B, 16, d]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed
        x = self.encoder(x)
        x = self.norm(x)
        return self.head(x[:, 0])


class SwitchTiny(nn.Module):
    """Switch-Transformer-style top-1 MoE layer (dense evaluation):
    h = LayerNorm(x); probs = softmax(router(h)); idx = argmax(probs);
    mask = one_hot(idx, E); gate = sum(probs * mask); y = sum_e mask_e *
    expert_e(h) (experts stacked); out = head(x + gate * y)."""

    def __init__(self, d=16, d_ff=32, n_experts=4, n_out=10):
        super().__init__()
        self.n_experts = n_experts
        self.ln = nn.LayerNorm(d)
        self.router = nn.Linear(d, n_experts)
        self.experts = nn.ModuleList([
            nn.Sequential(nn.Linear(d, d_ff), nn.ReLU(), nn.Linear(d_ff, d))
            for _ in range(n_experts)])
        self.head = nn.Linear(d, n_out)

    def forward(self, x):
        h = self.ln(x)
        probs = F.softmax(self.router(h), dim=-1)                      # [B, S, E]
        expert_index = torch.argmax(probs, dim=-1)                     # [B, S]
        mask = F.one_hot(expert_index, num_classes=self.n_experts).to(probs.dtype)
        gate = (probs * mask).sum(dim=-1, keepdim=True)                # [B, S, 1]
        expert_out = torch.stack([e(h) for e in self.experts], dim=-2)  # [B, S, E, d]
        y = (mask.unsqueeze(-1) * expert_out).sum(dim=-2)              # [B, S, d]
        return self.head(x + gate * y)


class CNNBNTrain(nn.Module):
    """Small CNN whose BatchNorms run in training mode (batch statistics):
    Conv3x3(3,8)-BN-ReLU, Conv3x3(8,16, stride 2)-BN-ReLU, global average
    pool, Linear(16, 10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


FOREIGN = {
    "gpt-tiny": dict(
        cls=GPTTiny, seed=2001, opset=14, mode="eval", training="EVAL",
        input_name="idx", input_shape=(16,), kind="tokens", vocab=65, batch=2,
        desc="nanoGPT-style causal language model written the usual way: nn.Embedding token "
             "(65-char vocabulary) and position (block_size 32, reference sequence 16, "
             "positions from torch.arange(T)) embeddings, 2 pre-LN blocks (nn.LayerNorm; "
             "fused nn.Linear(32, 96) c_attn split into q/k/v, view/transpose into 2 heads of "
             "16, causal mask built in forward by torch.triu(torch.ones(T, T, bool), 1) and "
             "masked_fill(-inf), softmax, nn.Linear c_proj; MLP nn.Linear(32,128) -> GELU "
             "(tanh approximation) -> nn.Linear(128,32)), dropout 0.1 (identity in eval), "
             "final LayerNorm, untied nn.Linear(32, 65, bias=False) head. Exported in eval "
             "mode at opset 14 with the default TrainingMode.EVAL and constant folding, so "
             "LayerNorm is decomposed, every nn.Linear on the 3-D activations becomes "
             "MatMul with a folded, transposed, renamed weight initializer "
             "(`onnx::MatMul_*`); T and the positions come from Shape/Gather/Range, and the "
             "mask from ConstantOfShape/Trilu/Where, inside the graph."),
    "resnet-tiny": dict(
        cls=ResNetTiny, seed=2002, opset=13, mode="eval", training="PRESERVE",
        input_name="input", input_shape=(3, 16, 16), kind="image", batch=2,
        desc="torchvision-style ResNet for 16x16 RGB images: Conv3x3(3,16, no bias)-BN-ReLU "
             "stem, three BasicBlocks (16->16; 16->32 stride 2; 32->64 stride 2; each "
             "Conv3x3-BN-ReLU-Conv3x3-BN + shortcut, the stride-2 blocks with a 1x1 stride-2 "
             "Conv + BN shortcut, ReLU after the add), AdaptiveAvgPool2d(1), torch.flatten, "
             "nn.Linear(64,10) (Gemm). Exported in eval mode with TrainingMode.PRESERVE so "
             "the BatchNormalization nodes (inference mode, running statistics as "
             "non-trainable initializers) are kept rather than fused into the convolutions."),
    "vit-tiny": dict(
        cls=ViTTiny, seed=2003, opset=14, mode="eval", training="EVAL",
        input_name="input", input_shape=(3, 16, 16), kind="image", batch=2,
        desc="ViT-style image classifier: nn.Conv2d(3,32,kernel 4,stride 4) patch embedding "
             "on 16x16 images (16 patches) -> flatten(2).transpose(1,2), class token "
             "(expand to the batch + torch.cat), learned position embedding [1,17,32], "
             "nn.TransformerEncoder of 2 nn.TransformerEncoderLayer(d_model 32, nhead 2, "
             "dim_feedforward 64, GELU (erf), dropout 0.1, batch_first, norm_first), final "
             "nn.LayerNorm, nn.Linear(32,10) head on the class token. nn.MultiheadAttention "
             "exports with its packed in_proj_weight folded into a transposed initializer. "
             "Exported in eval mode at opset 14 (TrainingMode.EVAL, constant folding)."),
    "switch-tiny": dict(
        cls=SwitchTiny, seed=2004, opset=13, mode="eval", training="EVAL",
        input_name="input", input_shape=(8, 16), kind="features", batch=2,
        desc="Tiny Switch-Transformer-style top-1 mixture-of-experts layer on float token "
             "features [batch, 8, 16]: h = LayerNorm(x); probs = softmax(nn.Linear(16,4) "
             "router); argmax -> F.one_hot(., 4) mask; gate = sum(probs * mask); 4 experts "
             "nn.Linear(16,32)-ReLU-nn.Linear(32,16) evaluated densely and stacked; "
             "y = sum_e mask_e * expert_e(h); output nn.Linear(16,10)(x + gate * y). "
             "Exported in eval mode at opset 13 (TrainingMode.EVAL, constant folding)."),
    "cnn-bn-train": dict(
        cls=CNNBNTrain, seed=2005, opset=15, mode="train", training="TRAINING",
        input_name="input", input_shape=(3, 16, 16), kind="image", batch=4,
        desc="Small CNN with BatchNorm in TRAINING mode: Conv3x3(3,8, no bias)-BN-ReLU, "
             "Conv3x3(8,16, stride 2, no bias)-BN-ReLU, AdaptiveAvgPool2d(1), flatten, "
             "nn.Linear(16,10). Exported with model.train() and "
             "training=TrainingMode.TRAINING at opset 15 (constant folding off, as the exporter "
             "recommends for training mode), so each BatchNormalization node has "
             "training_mode=1 and normalises with the batch statistics; the running-mean/var "
             "outputs of the nodes are unused. Reference outputs and gradients are computed "
             "by PyTorch in train mode (batch statistics, biased variance) on a batch of 4."),
}


def build_foreign(name):
    """Rebuild the seeded foreign model `name` (float32, in its export mode)
    and its reference input. Returns (module, example_input)."""
    spec = FOREIGN[name]
    torch.manual_seed(spec["seed"])
    model = spec["cls"]().float()
    # As in a trained checkpoint, no two parameters (or BN statistics) hold
    # equal values: perturb everything. (Fresh inits have all-ones LayerNorm
    # weights, zero biases, and nn.TransformerEncoder deep-copies one layer;
    # in eval mode the exporter would merge such equal initializers.)
    g = torch.Generator().manual_seed(spec["seed"] + 7)
    with torch.no_grad():
        for _, p in model.named_parameters():
            scale = 0.05 if p.dim() <= 1 else 0.2 * float(p.std()) + 1e-3
            p.add_(torch.randn(p.shape, generator=g) * scale)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
    model.train(spec["mode"] == "train")
    gx = torch.Generator().manual_seed(spec["seed"] + 1)
    shape = (spec["batch"],) + spec["input_shape"]
    if spec["kind"] == "image":
        x = torch.rand(shape, generator=gx, dtype=torch.float32)
    elif spec["kind"] == "features":
        x = torch.randn(shape, generator=gx, dtype=torch.float32)
    else:
        x = torch.randint(0, spec["vocab"], shape, generator=gx, dtype=torch.int64)
    return model, x


def export_foreign_onnx(model, x, name, path):
    spec = FOREIGN[name]
    in_name = spec["input_name"]
    training = getattr(torch.onnx.TrainingMode, spec["training"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), path,
            export_params=True,
            keep_initializers_as_inputs=False,
            do_constant_folding=spec["training"] != "TRAINING",
            training=training,
            opset_version=spec["opset"],
            input_names=[in_name],
            output_names=["logits"],
            dynamic_axes={in_name: {0: "batch"}, "logits": {0: "batch"}},
        )
    # write the known (static) output shape [batch, ...] back, as the
    # exporter's shape inference may lose it
    with torch.no_grad():
        y = model(x)
    m = onnx.load(path)
    dims = m.graph.output[0].type.tensor_type.shape.dim
    assert len(dims) == y.dim()
    for i, d in enumerate(dims):
        if i == 0:
            d.dim_param = "batch"
        else:
            d.dim_value = y.shape[i]
    onnx.save(m, path)


_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)


def _match(arr, pv):
    """How initializer value `arr` derives from parameter value `pv`:
    'id', 'T' (2-D transpose), 'reshape' (same data, other shape),
    'rows:N' (leading N rows of dim 0), or None."""
    if arr.shape == pv.shape and np.array_equal(arr, pv):
        return "id"
    if pv.ndim == 2 and arr.shape == pv.T.shape and np.array_equal(arr, pv.T):
        return "T"
    if arr.size == pv.size and np.array_equal(arr.reshape(-1), pv.reshape(-1)):
        return "reshape"
    if (pv.ndim >= 1 and arr.ndim == pv.ndim and arr.shape[1:] == pv.shape[1:]
            and 0 < arr.shape[0] < pv.shape[0] and np.array_equal(arr, pv[:arr.shape[0]])):
        return "rows:%d" % arr.shape[0]
    return None


def _apply_transform(g, how, shape):
    if how == "id":
        return g
    if how == "T":
        return g.t().contiguous()
    if how == "reshape":
        return g.reshape(shape)
    if how.startswith("rows:"):
        return g[:int(how[5:])]
    raise ValueError(how)


def map_initializers(model, onnx_model):
    """Map the float ONNX initializers to trainable parameters by value.

    Returns (mapped, unmapped, ambiguous, other): mapped is a list of
    (init_name, [(param_name, transform), ...]) in graph.initializer order;
    the initializer's gradient is the sum of the transformed parameter
    gradients (several parameters only if the exporter merged
    equal-valued ones). A parameter matching more than one initializer is
    ambiguous (its PyTorch gradient would be the sum over its uses), and
    those initializers get no grad file. unmapped: trainable parameters that
    match no initializer. other: initializers that are not parameters."""
    params = [(n, p.detach().cpu().numpy()) for n, p in model.named_parameters()
              if p.requires_grad]
    matches = {}
    by_param = {n: [] for n, _ in params}
    for init in onnx_model.graph.initializer:
        if init.data_type not in _FLOAT_TYPES:
            continue
        arr = numpy_helper.to_array(init)
        ms = []
        for n, pv in params:
            how = _match(arr, pv)
            if how is not None:
                ms.append((n, how))
                by_param[n].append(init.name)
        if ms:
            matches[init.name] = ms
    ambiguous = sorted(n for n, inits in by_param.items() if len(inits) > 1)
    unmapped = [n for n, inits in by_param.items() if not inits]
    mapped, other = [], []
    for init in onnx_model.graph.initializer:
        ms = matches.get(init.name)
        if ms and not any(n in ambiguous for n, _ in ms):
            mapped.append((init.name, ms))
        else:
            other.append(init.name)
    return mapped, unmapped, ambiguous, other


def reference_grads_foreign(name, x, cot, mapped, onnx_model):
    """float64 autograd of sum(model(x) * cot) (model in its export mode)
    w.r.t. every parameter, then transformed onto the mapped initializers."""
    model, _ = build_foreign(name)
    model = model.double()
    xx = x.double() if x.is_floating_point() else x
    out = model(xx)
    (out * cot.double()).sum().backward()
    pg = {n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
          for n, p in model.named_parameters()}
    dims = {t.name: tuple(t.dims) for t in onnx_model.graph.initializer}
    res = {}
    for init_name, ms in mapped:
        g = None
        for pname, how in ms:
            t = _apply_transform(pg[pname], how, dims[init_name])
            g = t if g is None else g + t
        res[init_name] = g
    return res, out.detach()


def flops_traced(onnx_model, x1):
    """Forward FLOPs for one sample (2*MACs of MatMul, Gemm, Conv), from the
    shapes seen by the reference interpreter on a batch of 1 (ONNX shape
    inference does not see through the Shape/Gather/Concat reshapes of these
    graphs)."""
    trace = []
    with torch.no_grad():
        run_onnx_reference(onnx_model, {onnx_model.graph.input[0].name: x1}, trace=trace)
    total, breakdown = 0, Counter()
    for node, ins, y in trace:
        if node.op_type == "MatMul":
            macs = int(np.prod(y)) * ins[0][-1]
        elif node.op_type == "Gemm":
            ta = next((a.i for a in node.attribute if a.name == "transA"), 0)
            macs = int(np.prod(y)) * (ins[0][0] if ta else ins[0][1])
        elif node.op_type == "Conv":
            macs = int(np.prod(y)) * int(np.prod(ins[1][1:]))
        else:
            continue
        total += 2 * macs
        breakdown[node.op_type] += 2 * macs
    return total, breakdown


def write_card_foreign(name, path, onnx_model, n_params, ops, flops, breakdown, mapped,
                       unmapped, ambiguous, other, file_size, out_dir, extra):
    spec = FOREIGN[name]
    g = onnx_model.graph
    opset = next(o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx"))
    L = ["# %s" % name, "", spec["desc"], "", "| | |", "|---|---|"]
    L.append("| trainable parameters | %s |" % _fmt_int(n_params))
    L.append("| model.onnx size | %s bytes (%.2f MiB) |" % (_fmt_int(file_size),
                                                           file_size / 2 ** 20))
    L.append("| opset | %d (producer %s %s) |" % (opset, onnx_model.producer_name,
                                                 onnx_model.producer_version))
    for vi in g.input:
        L.append("| input | `%s` %s %s |" % (vi.name, _elem_type(vi), _shape_str(vi)))
    for vi in g.output:
        L.append("| output | `%s` %s %s |" % (vi.name, _elem_type(vi), _shape_str(vi)))
    if flops is not None:
        L.append("| forward FLOPs / sample | %s (%.2f MFLOP; 2*MACs of %s) |" % (
            _fmt_int(flops), flops / 1e6,
            ", ".join("%s %s" % (k, _fmt_int(v)) for k, v in sorted(breakdown.items()))))
    L.append("| nodes | %d |" % len(g.node))
    L.append("| initializers | %d (%d with a grad file, %d other) |" % (
        len(g.initializer), len(mapped), len(other)))
    L.append("| export | model.%s(), TrainingMode.%s, do_constant_folding=%s |" % (
        "train" if spec["mode"] == "train" else "eval", spec["training"],
        spec["training"] != "TRAINING"))
    L.append("| torch.manual_seed | %d |" % spec["seed"])
    L += ["", "## Op types", "", "| op | count |", "|---|---|"]
    for op, c in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])):
        L.append("| %s | %d |" % (op, c))
    L += ["", "## Initializers and parameters", "",
          "The exporter renames, transposes and folds parameters; each float initializer "
          "was mapped back to PyTorch parameters by value (`T`: the initializer is the "
          "transposed parameter; `rows:N`: its first N rows; `reshape`: same data, other "
          "shape). grad_j is the PyTorch float64 gradient of the parameter, transformed the "
          "same way.", "",
          "| grad file | initializer | shape | parameter | how |", "|---|---|---|---|---|"]
    dims = {t.name: list(t.dims) for t in g.initializer}
    for j, (init_name, ms) in enumerate(mapped):
        L.append("| grad_%d.pb | `%s` | %s | %s | %s |" % (
            j, init_name, dims[init_name], ", ".join("`%s`" % n for n, _ in ms),
            ", ".join(h for _, h in ms)))
    L.append("")
    if unmapped:
        L.append("- Trainable parameters with no initializer of their own (folded into "
                 "other constants; no grad file): %s." % ", ".join("`%s`" % n for n in unmapped))
    else:
        L.append("- Every trainable parameter maps to exactly one initializer.")
    if ambiguous:
        L.append("- Parameters used through several initializers (their initializers get no "
                 "grad file): %s." % ", ".join("`%s`" % n for n in ambiguous))
    if other:
        L.append("- Initializers without a grad file (buffers, folded constants, "
                 "non-float): %s." % ", ".join("`%s`" % o for o in other))
    L += ["", "## Test data (`test_data_set_0/`)", ""]
    L.append("- `input_0.pb`: reference input `%s`, batch %d (%s)." % (
        spec["input_name"], spec["batch"],
        {"image": "uniform [0,1) pixels", "features": "N(0,1) features",
         "tokens": "uniform random token ids in [0,%d)" % spec.get("vocab", 0)}[spec["kind"]]))
    L.append("- `output_0.pb`: PyTorch float32 output `logits` (model in %s mode)."
             % spec["mode"])
    L.append("- `cotangent_0.pb`: seeded N(0,1) tensor with the shape of `logits`.")
    L.append("- `grad_<j>.pb` (j = 0..%d): gradient of sum(logits * cotangent) with respect "
             "to the initializer in the table above, computed by PyTorch autograd in float64 "
             "(model in %s mode) and stored as float32; TensorProto name = initializer "
             "name." % (len(mapped) - 1, spec["mode"]))
    if extra:
        L.append("- Verification: %s." % extra)
    L += ["", "## How it was made", "", "```",
          "/usr/bin/python3 tools/export_models.py --foreign %s" % name, "```", ""]
    L.append("torch %s, onnx %s; `build_foreign('%s')` in tools/export_models.py rebuilds "
             "the same model and reference input. All parameters (and BN running "
             "statistics) are randomly perturbed after the usual initialisation so that no "
             "two of them hold equal values, as in a trained checkpoint." % (
                 torch.__version__, onnx.__version__, name))
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def export_foreign(name, out_root, verify=True):
    spec = FOREIGN[name]
    d = os.path.join(out_root, name)
    td = os.path.join(d, "test_data_set_0")
    os.makedirs(td, exist_ok=True)
    for fn in os.listdir(td):
        if fn.endswith(".pb"):
            os.remove(os.path.join(td, fn))
    onnx_path = os.path.join(d, "model.onnx")

    model, x = build_foreign(name)
    export_foreign_onnx(model, x, name, onnx_path)
    # reference output from a fresh model (export may have run train-mode
    # BN and touched its running statistics; outputs do not depend on them)
    model, x = build_foreign(name)
    with torch.no_grad():
        y = model(x)

    m = onnx.load(onnx_path)
    onnx.checker.check_model(m)
    mapped, unmapped, ambiguous, other = map_initializers(model, m)
    for n in unmapped:
        print("  %s: parameter %s has no initializer (no grad file)" % (name, n))
    for n in ambiguous:
        print("  %s: parameter %s matches several initializers (no grad file)" % (name, n))
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    in_name = m.graph.input[0].name
    assert in_name == spec["input_name"], in_name
    assert m.graph.output[0].name == "logits"
    save_tensor(x.numpy(), in_name, os.path.join(td, "input_0.pb"))
    save_tensor(y.numpy().astype(np.float32), "logits", os.path.join(td, "output_0.pb"))
    gc = torch.Generator().manual_seed(spec["seed"] + 2)
    cot = torch.randn(y.shape, generator=gc, dtype=torch.float32)
    save_tensor(cot.numpy(), "logits", os.path.join(td, "cotangent_0.pb"))
    grads, y64 = reference_grads_foreign(name, x, cot, mapped, m)
    for j, (init_name, _) in enumerate(mapped):
        save_tensor(grads[init_name].numpy().astype(np.float32), init_name,
                    os.path.join(td, "grad_%d.pb" % j))

    ops = op_counts(m)
    flops, breakdown = flops_traced(m, x[:1])
    file_size = os.path.getsize(onnx_path)
    extra = verify_foreign(name, out_root, x, y, y64, grads, mapped) if verify else ""
    write_card_foreign(name, os.path.join(d, "CARD.md"), m, n_params, ops, flops, breakdown,
                       mapped, unmapped, ambiguous, other, file_size,
                       os.path.relpath(out_root), extra)
    print("%-12s params %7s  model.onnx %9s bytes  %.2f MFLOP/sample  opset %d  grad files %d "
          "(%d of %d parameter tensors mapped)  ops %s" % (
              name, _fmt_int(n_params), _fmt_int(file_size), flops / 1e6, spec["opset"],
              len(mapped), len(list(model.parameters())) - len(unmapped) - len(ambiguous),
              len(list(model.parameters())),
                      " ".join("%s:%d" % kv for kv in sorted(ops.items()))))
    return dict(params=n_params, size=file_size, ops=ops)


def verify_foreign(name, out_root, x, y, y64, grads, mapped):
    spec = FOREIGN[name]
    d = os.path.join(out_root, name)
    td = os.path.join(d, "test_data_set_0")
    m = onnx.load(os.path.join(d, "model.onnx"))
    onnx.checker.check_model(m, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch", vi
    xin = numpy_helper.to_array(load_tensor(os.path.join(td, "input_0.pb"))).copy()
    assert load_tensor(os.path.join(td, "input_0.pb")).name == m.graph.input[0].name
    assert np.array_equal(xin, x.numpy())
    yout = numpy_helper.to_array(load_tensor(os.path.join(td, "output_0.pb")))
    assert yout.dtype == np.float32 and np.array_equal(yout, y.numpy())
    cot = numpy_helper.to_array(load_tensor(os.path.join(td, "cotangent_0.pb")))
    assert cot.shape == yout.shape and cot.dtype == np.float32
    inits = {t.name: t for t in m.graph.initializer}
    for j, (init_name, _) in enumerate(mapped):
        t = load_tensor(os.path.join(td, "grad_%d.pb" % j))
        assert t.name == init_name and t.data_type == onnx.TensorProto.FLOAT
        g = numpy_helper.to_array(t)
        assert list(g.shape) == list(inits[init_name].dims), (init_name, g.shape)
        assert np.array_equal(g, grads[init_name].numpy().astype(np.float32))
        assert np.isfinite(g).all()
    assert not os.path.exists(os.path.join(td, "grad_%d.pb" % len(mapped)))

    # the exported graph (float64 interpreter) computes what PyTorch computes
    leaves = {}
    (r,) = run_onnx_reference(m, {m.graph.input[0].name: torch.from_numpy(xin)}, leaves)
    scale = y64.abs().max().item()
    err = (r.detach() - y64).abs().max().item()
    if not err <= 1e-6 * max(1.0, scale):
        raise RuntimeError("%s: ONNX graph vs PyTorch (f64) max abs err %g" % (name, err))
    err32 = (y64 - y.double()).abs().max().item()
    if not err32 <= 1e-4 * max(1.0, scale):
        raise RuntimeError("%s: float32 output vs float64 max abs err %g" % (name, err32))
    # gradients of the ONNX graph w.r.t. its initializers vs the grad files
    (r * torch.from_numpy(cot.copy()).double()).sum().backward()
    gerr = 0.0
    for j, (init_name, _) in enumerate(mapped):
        g = torch.from_numpy(numpy_helper.to_array(
            load_tensor(os.path.join(td, "grad_%d.pb" % j))).copy()).double()
        gref = leaves[init_name].grad
        if gref is None:
            gref = torch.zeros_like(g)
        e = (g - gref).abs().max().item()
        tol = 1e-6 * max(1.0, gref.abs().max().item())
        if not e <= tol:
            raise RuntimeError("%s: grad of %s differs from ONNX-graph autograd by %g"
                               % (name, init_name, e))
        gerr = max(gerr, e)
    # float initializers without a grad file that the output depends on
    buffers = {n for n, _ in build_foreign(name)[0].named_buffers()}
    nograd = [n for n, t in leaves.items() if t.grad is not None and t.grad.any()
              and n not in dict(mapped) and n not in buffers]
    zero = [n for n, _ in mapped if leaves[n].grad is None or not leaves[n].grad.any()]
    # dynamic batch
    model64 = build_foreign(name)[0].double()
    for b in (2, 3) if spec["mode"] == "train" else (1, 3):
        xb = x[:1].repeat((b,) + (1,) * (x.dim() - 1))
        if spec["mode"] == "train":
            xb = x[:b] if b <= x.shape[0] else torch.cat([x, x[:b - x.shape[0]] * 0.5])
        (rb,) = run_onnx_reference(m, {m.graph.input[0].name: xb})
        with torch.no_grad():
            yb64 = model64(xb.double() if xb.is_floating_point() else xb)
        assert tuple(rb.shape) == tuple(yb64.shape)
        assert (rb - yb64).abs().max().item() <= 1e-6 * max(1.0, scale)
    extra = ("onnx.checker (full) ok, %d .pb re-read, ONNX graph (float64 interpreter) vs "
             "PyTorch float64 max abs err %.1e, float32 output vs float64 %.1e, grad files vs "
             "ONNX-graph autograd %.1e, other batch sizes ok" % (
                 3 + len(mapped), err, err32, gerr))
    if name == "switch-tiny":
        model = build_foreign(name)[0]
        with torch.no_grad():
            probs = torch.softmax(model.router(model.ln(x)), -1)
        top2 = probs.topk(2, -1).values
        margin = (top2[..., 0] - top2[..., 1]).min().item()
        used = sorted(set(probs.argmax(-1).flatten().tolist()))
        if margin < 1e-3:
            raise RuntimeError("switch-tiny: routing margin %g too small" % margin)
        extra += ", experts used %s, smallest top-1/top-2 router prob margin %.3f" % (
            used, margin)
    if nograd:
        extra += ", float initializers with nonzero gradient but no grad file: %s" % nograd
    if zero:
        extra += ", all-zero grads: %s" % zero
    print("  verified %s: %s" % (name, extra))
    return extra


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None,
                    help="output directory (default: models, or %s with --foreign)" % FOREIGN_OUT)
    ap.add_argument("--foreign", action="store_true",
                    help="export the foreign models (%s) instead" % ", ".join(FOREIGN_NAMES))
    ap.add_argument("--no-verify", action="store_true", help="skip verification")
    ap.add_argument("names", nargs="*", help="models (default: %s; with --foreign: %s)" % (
        " ".join(MODEL_NAMES), " ".join(FOREIGN_NAMES)))
    args = ap.parse_args(argv)
    known = FOREIGN_NAMES if args.foreign else MODEL_NAMES
    names = args.names or known
    for n in names:
        if n not in known:
            ap.error("unknown model %r (have %s)" % (n, ", ".join(known)))
    out = args.out or (FOREIGN_OUT if args.foreign else "models")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    for n in names:
        if args.foreign:
            export_foreign(n, out, verify=not args.no_verify)
        else:
            export_one(n, out, verify=not args.no_verify)
    return 0

if __name__ == "__main__":
    sys.exit(main())
