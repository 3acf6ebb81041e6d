"""In-memory stand-in for an official SSAMBA ``.pth`` state dict (keys, shapes, dtypes, order).

The official checkpoints (Google Drive / Hugging Face, see the SSAMBA README) cannot be
downloaded here, so this module rebuilds what ``torch.save(audio_model.state_dict(), ...)``
produces in the official training code. The checkpoint importer can then be tested without
the real files. Nothing here imports the official code; shapes are written out by hand from
reading the sources below.

Sources (repository + path)
---------------------------
[S1] SiavashShams/ssamba  src/models/both_models.py          (AMBAModel; commit 57d709f0)
[S2] SiavashShams/ssamba  src/run_amba.py                     (argparse -> vision_mamba_config)
[S3] SiavashShams/ssamba  src/pretrain/run_mask_patch_amba.sh (pretraining recipe)
[S4] SiavashShams/ssamba  src/finetune/esc50/run_esc_patch_amba.sh,
                          src/finetune/audioset/run_as_amba.sh,
                          src/finetune/speechcommands_v1/run_sc_amba.sh (fine-tuning recipes)
[S5] SiavashShams/ssamba  src/traintest_mask.py, src/traintest.py (how checkpoints are saved)
[S6] SiavashShams/ssamba  src/finetune/iemocap/ssast/expert.py (SUPERB loader config)
[V1] hustvl/Vim           vim/models_mamba.py                 (VisionMamba, Block, PatchEmbed)
[V2] hustvl/Vim           mamba-1p1p1/mamba_ssm/modules/mamba_simple.py (Mamba, bimamba v2)
[M1] state-spaces/mamba   mamba_ssm/ops/triton/layernorm.py   (RMSNorm)

Facts verified from source
--------------------------
Saving / prefix
 * Pretraining and fine-tuning both save ``audio_model.state_dict()`` where ``audio_model``
   is an ``nn.DataParallel``, so every key starts with ``module.`` [S5]. The fine-tuning
   loader reads ``sd['module.v.patch_embed.proj.weight']`` and ``sd['module.p_input_fdim']``
   and refuses a checkpoint without them [S1].

Pretraining checkpoint (AMBAModel, pretrain_stage=True) [S1]
 * ``module.p_input_fdim`` / ``module.p_input_tdim``: ``nn.Parameter(torch.tensor(int),
   requires_grad=False)``, so they ARE in the state dict: 0-dim int64 tensors holding the
   pretraining input_fdim (128) / input_tdim (1024).
 * ``module.mask_embed``: Parameter (1, 1, E) (xavier_normal_ re-init is in-place, so it stays
   a registered Parameter).
 * ``module.cpredlayer`` / ``module.gpredlayer``: Sequential(Linear(E, E), ReLU,
   Linear(E, 256)), so keys ``.0.weight (E,E)``, ``.0.bias (E,)``, ``.2.weight (256,E)``,
   ``.2.bias (256,)``. The 256 is hard-coded, not fshape*tshape.
 * ``module.v.patch_embed.proj``: replaced by ``Conv2d(1, E, (fshape,tshape),
   stride=(fstride,tstride))`` with the default bias=True, so weight (E,1,fshape,tshape) and
   bias (E,). Pretraining requires fstride == fshape and tstride == tshape (ValueError
   otherwise).
 * ``module.v.pos_embed``: replaced by (1, p_f*p_t + 1, E), with p_f, p_t from a Conv2d
   without padding: (in - shape)//stride + 1. 128x1024 with 16x16 patches gives 8x64 = 512
   patches, so (1, 513, E).
 * One extra token only: ``cls_token_num = 1``; ``module.v.cls_token`` (1, 1, E). There is
   no ``v.dist_token`` and no ``cls_token_head/tail`` (use_double_cls_token=false) [S1,S3,V1].
   The SSAMBA forwards (mpc, mpg, ft_avgtok, ft_cls) prepend the cls token at index 0
   (``torch.cat((cls_tokens, x), 1)``) and ignore Vim's use_middle_cls_token [S1].
 * Registered but without state: softmax, lsoftmax, unfold. ``mask_correct`` is only created
   inside mpc(show_mask=True) (probing), never in a saved training checkpoint [S1].
 * Own parameters come before child modules in ``state_dict()``, so the order is
   p_input_fdim, p_input_tdim, mask_embed, v.*, cpredlayer.*, gpredlayer.* (PyTorch rule
   applied to the registration order in [S1]).

Fine-tuned checkpoint (AMBAModel, pretrain_stage=False; task ft_avgtok or ft_cls) [S1,S5]
 * The pretrained model is built as a local ``audio_model`` and only ``self.v =
   audio_model.module.v`` is kept. So a fine-tuned state dict has ``module.v.*`` and
   ``module.mlp_head.*`` only: NO p_input_fdim/tdim, mask_embed, cpredlayer or gpredlayer.
 * ``module.mlp_head`` = Sequential(LayerNorm(E), Linear(E, label_dim)), so keys
   ``.0.weight/.0.bias (E,)``, ``.1.weight (n_classes,E)``, ``.1.bias (n_classes,)``.
 * ``module.v.pos_embed`` becomes (1, 1 + f*t, E) for the FINE-TUNING grid (cut or bilinear
   interpolation of the pretrained grid; the cls row is copied).
 * When the stride changes, ``patch_embed.proj`` is rebuilt with the new stride but the same
   kernel, so the weight keeps its shape (E,1,fshape,tshape) and the bias is kept.
 * ft_avgtok and ft_cls only differ in forward(); their state dicts are identical.

VisionMamba (``module.v``) under the recipes actually used [V1,S2,S3,S4]
 * The recipes pass num_classes=1000 (run_amba.py default too), so ``module.v.head`` =
   Linear(E, 1000) exists (weight (1000,E), bias (1000,)) in BOTH pretraining and fine-tuned
   checkpoints, although SSAMBA never calls it.
 * rms_norm='false' in the pretraining and fine-tuning recipes, so every
   ``layers.{i}.norm`` and ``norm_f`` is nn.LayerNorm(E) with weight AND bias [S3,S4,V1].
   (RMSNorm would have ``weight`` only; its bias is registered as None [M1].)
 * if_abs_pos_embed=true, if_rope=false (so no rope buffers), if_bimamba=false,
   bimamba_type='v2'. ``layers`` is a ModuleList of ``depth`` Blocks; each Block has
   ``mixer`` (Mamba) and ``norm``; drop_path has no state [V1].
 * if_bidirectional=true only changes forward(): layers 2i / 2i+1 are run on the sequence
   and on its flip, then summed. No extra keys; depth 24 = 12 pairs [S1].
 * ``if_devide_out`` (the SSAMBA spelling) and Vim's ``if_divide_out`` are plain flags, no
   parameters. init_layer_scale=None, so there is no ``mixer.gamma`` [V1,V2].
 * ``patch_embed.norm`` is nn.Identity (no norm_layer), so it has no keys [V1].

Mamba mixer, bimamba v2 (``module.v.layers.{i}.mixer``) [V2]
 * Defaults d_state=16, d_conv=4, expand=2, dt_rank='auto' = ceil(E/16); d_inner = 2E.
 * in_proj: Linear(E, 2*d_inner, bias=False): weight (2*d_inner, E), no bias.
 * conv1d / conv1d_b: depthwise Conv1d(d_inner, d_inner, 4, groups=d_inner, bias=True):
   weight (d_inner, 1, 4), bias (d_inner,).
 * x_proj / x_proj_b: Linear(d_inner, dt_rank + 2*d_state, bias=False): weight
   (dt_rank + 32, d_inner).
 * dt_proj / dt_proj_b: Linear(dt_rank, d_inner, bias=True): weight (d_inner, dt_rank),
   bias (d_inner,).
 * A_log / A_b_log: (d_inner, d_state) fp32, initialised to log(1..16) on each row.
 * D / D_b: (d_inner,) fp32, initialised to ones.
 * out_proj: Linear(d_inner, E, bias=False): weight (E, d_inner), no bias.
 * Order inside a mixer: A_log, D, A_b_log, D_b, then in_proj, conv1d, x_proj, dt_proj,
   conv1d_b, x_proj_b, dt_proj_b, out_proj.

Sizes for tiny (E=192, depth 24): d_inner 384, dt_rank 12, so x_proj (44, 384),
dt_proj.weight (384, 12), in_proj (768, 192), out_proj (192, 384), conv1d (384, 1, 4).

Parameter counts (depth 24, LayerNorm, bimamba v2, 16x16 patches; see ``param_count``)
---------------------------------------------------------------------------------------
                                 tiny E=192    small E=384    base E=768
 24 layers + norm_f               6,774,144     25,049,856     96,105,984
 + patch_embed (conv w+b)            49,344         98,688        197,376
 + cls_token                            192            384            768
 = backbone, no pos_embed, no heads 6,823,680   25,148,928     96,304,128
 pos_embed, 128x1024 (513 rows)      98,496        196,992        393,984
 v.head Linear(E, 1000)             193,000        385,000        769,000
The published ~6.8M / 25.1M / 96.3M (figures as given in our brief, the SSAMBA paper table
was not re-read here) match the "backbone" row: the 24 layers, norm_f, patch_embed AND
cls_token, WITHOUT pos_embed and without any head (v.head, mlp_head, cpred/gpredlayer).
Leaving patch_embed out gives 6.77M / 25.05M / 96.11M, which would round differently for
small and base. Adding pos_embed gives 96.70M for base.

Unverified
----------
 * That the RELEASED .pth files were made with exactly the released run_mask_patch_amba.sh
   settings (rms_norm=false -> LayerNorm with bias, num_classes=1000 -> v.head present,
   16x16 patches, 128x1024 input). Their key lists could not be inspected here. Note that
   SUPERB's expert.py [S6] builds the model with rms_norm=True and loads with strict=False,
   which would silently ignore norm biases. ``rms_norm=True`` below emulates an RMSNorm
   checkpoint (no ``.norm.bias`` / ``norm_f.bias``).
 * speechcommands_v2/run_sc_amba.sh is not in the stored index (only v1's, which leaves
   depth / rms_norm / ... unset). For SCv1/v2 fine-tuning, 16x16 patches with stride 10 on
   128x128 input (12x12 = 144 patches, pos_embed (1,145,E)) are taken from the v1 script.
 * The official fine-tune pos_embed code crashes for some grids: it slices the frequency
   axis with ``+ t_dim`` where ``f_dim`` is meant, and interpolates to a hard-coded height
   of 8. This module only gives the shape the code intends, (1, 1 + f*t, E). It does not
   reproduce the crashes.
 * Values: trained values are unknown. The random values below are seeded and plausible
   (see ``official_state_dict``).
"""

from __future__ import annotations

import math
import zlib

import torch

__all__ = [
    "D_CONV",
    "D_STATE",
    "EXPAND",
    "PRED_DIM",
    "TASKS",
    "VIM_NUM_CLASSES",
    "official_key_shapes",
    "official_state_dict",
    "param_count",
]

D_STATE = 16
D_CONV = 4
EXPAND = 2
PRED_DIM = 256  # cpredlayer / gpredlayer output width, hard-coded in both_models.py
VIM_NUM_CLASSES = 1000  # --num_classes in every official recipe -> v.head = Linear(E, 1000)

_PRETRAIN_TASKS = ("pretrain", "pretrain_mpc", "pretrain_mpg", "pretrain_joint")
_FT_TASKS = ("ft_avgtok", "ft_cls", "ft_avgtok_1sec")
TASKS = _PRETRAIN_TASKS + _FT_TASKS

_INT_KEYS = ("module.p_input_fdim", "module.p_input_tdim")


def _grid(in_dim: int, shape: int, stride: int) -> int:
    """Patch count along one axis of an unpadded Conv2d (what AMBAModel.get_shape measures)."""
    if shape <= 0 or stride <= 0:
        raise ValueError(f"patch shape and stride must be positive, got {shape}, {stride}")
    if in_dim < shape:
        raise ValueError(f"input dim {in_dim} is smaller than the patch size {shape}")
    return (in_dim - shape) // stride + 1


def _is_pretrain(task: str) -> bool:
    if task in _PRETRAIN_TASKS:
        return True
    if task in _FT_TASKS:
        return False
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def official_key_shapes(
    embed_dim: int = 192,
    depth: int = 24,
    *,
    fshape: int = 16,
    tshape: int = 16,
    fstride: int = 16,
    tstride: int = 16,
    input_fdim: int = 128,
    input_tdim: int = 1024,
    task: str = "pretrain",
    n_classes: int = 35,
    seed: int = 0,
    vim_num_classes: int = VIM_NUM_CLASSES,
    rms_norm: bool = False,
) -> dict[str, tuple[int, ...]]:
    """Ordered ``{key: shape}`` of an official SSAMBA checkpoint.

    ``task`` is ``"pretrain"`` (or any ``pretrain_*``) for an SSL checkpoint and
    ``"ft_avgtok"`` / ``"ft_cls"`` for a fine-tuned one (same keys). The geometry arguments
    are those of the stage that wrote the checkpoint: the pretraining input for a
    pretraining checkpoint, the fine-tuning input and stride for a fine-tuned one.
    ``n_classes`` only matters for fine-tuned checkpoints (``mlp_head``). ``seed`` is
    accepted so both functions take the same arguments; it has no effect on shapes.
    ``vim_num_classes=0`` drops ``v.head`` (Vim uses nn.Identity then). ``rms_norm=True``
    drops the norm biases (RMSNorm); the official recipes use LayerNorm.
    The dict order is the order ``state_dict()`` would give.
    """
    del seed
    if embed_dim <= 0 or depth <= 0:
        raise ValueError("embed_dim and depth must be positive")
    pretrain = _is_pretrain(task)
    if pretrain and (fstride != fshape or tstride != tshape):
        raise ValueError(
            "pretraining requires fstride == fshape and tstride == tshape (no patch overlap), "
            f"got shape ({fshape},{tshape}) stride ({fstride},{tstride})"
        )
    if not pretrain and n_classes <= 0:
        raise ValueError("n_classes must be positive for a fine-tuned checkpoint")

    e = embed_dim
    d_inner = EXPAND * e
    dt_rank = math.ceil(e / 16)
    n_patches = _grid(input_fdim, fshape, fstride) * _grid(input_tdim, tshape, tstride)

    shapes: dict[str, tuple[int, ...]] = {}
    if pretrain:
        shapes["module.p_input_fdim"] = ()
        shapes["module.p_input_tdim"] = ()
        shapes["module.mask_embed"] = (1, 1, e)

    v = "module.v."
    shapes[v + "cls_token"] = (1, 1, e)
    shapes[v + "pos_embed"] = (1, n_patches + 1, e)
    shapes[v + "patch_embed.proj.weight"] = (e, 1, fshape, tshape)
    shapes[v + "patch_embed.proj.bias"] = (e,)
    if vim_num_classes > 0:
        shapes[v + "head.weight"] = (vim_num_classes, e)
        shapes[v + "head.bias"] = (vim_num_classes,)

    for i in range(depth):
        m = f"{v}layers.{i}.mixer."
        shapes[m + "A_log"] = (d_inner, D_STATE)
        shapes[m + "D"] = (d_inner,)
        shapes[m + "A_b_log"] = (d_inner, D_STATE)
        shapes[m + "D_b"] = (d_inner,)
        shapes[m + "in_proj.weight"] = (2 * d_inner, e)
        shapes[m + "conv1d.weight"] = (d_inner, 1, D_CONV)
        shapes[m + "conv1d.bias"] = (d_inner,)
        shapes[m + "x_proj.weight"] = (dt_rank + 2 * D_STATE, d_inner)
        shapes[m + "dt_proj.weight"] = (d_inner, dt_rank)
        shapes[m + "dt_proj.bias"] = (d_inner,)
        shapes[m + "conv1d_b.weight"] = (d_inner, 1, D_CONV)
        shapes[m + "conv1d_b.bias"] = (d_inner,)
        shapes[m + "x_proj_b.weight"] = (dt_rank + 2 * D_STATE, d_inner)
        shapes[m + "dt_proj_b.weight"] = (d_inner, dt_rank)
        shapes[m + "dt_proj_b.bias"] = (d_inner,)
        shapes[m + "out_proj.weight"] = (e, d_inner)
        shapes[f"{v}layers.{i}.norm.weight"] = (e,)
        if not rms_norm:
            shapes[f"{v}layers.{i}.norm.bias"] = (e,)

    shapes[v + "norm_f.weight"] = (e,)
    if not rms_norm:
        shapes[v + "norm_f.bias"] = (e,)

    if pretrain:
        for head in ("cpredlayer", "gpredlayer"):
            shapes[f"module.{head}.0.weight"] = (e, e)
            shapes[f"module.{head}.0.bias"] = (e,)
            shapes[f"module.{head}.2.weight"] = (PRED_DIM, e)
            shapes[f"module.{head}.2.bias"] = (PRED_DIM,)
    else:
        shapes["module.mlp_head.0.weight"] = (e,)
        shapes["module.mlp_head.0.bias"] = (e,)
        shapes["module.mlp_head.1.weight"] = (n_classes, e)
        shapes["module.mlp_head.1.bias"] = (n_classes,)
    return shapes


def _generator(seed: int, key: str) -> torch.Generator:
    # Seed per key (not one stream for the whole dict): a key with the same shape gets the
    # same values in the pretrain and fine-tuned dicts, whatever the task or the order.
    return torch.Generator().manual_seed((seed * 0x9E3779B1 + zlib.crc32(key.encode())) % (2**63))


def _value(key: str, shape: tuple[int, ...], *, seed: int, input_fdim: int, input_tdim: int) -> torch.Tensor:
    if key == "module.p_input_fdim":
        return torch.tensor(input_fdim)  # int64 scalar, as nn.Parameter(torch.tensor(int))
    if key == "module.p_input_tdim":
        return torch.tensor(input_tdim)

    g = _generator(seed, key)
    name = key.rsplit(".", 1)[-1]
    parent = key.rsplit(".", 2)[-2] if key.count(".") >= 2 else ""

    def randn(std: float) -> torch.Tensor:
        return torch.randn(shape, generator=g) * std

    if name in ("A_log", "A_b_log"):
        d_inner, d_state = shape
        base = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).expand(d_inner, d_state)
        return base + 0.05 * torch.randn(shape, generator=g)
    if name in ("D", "D_b"):
        return 1.0 + 0.05 * torch.randn(shape, generator=g)
    if parent in ("dt_proj", "dt_proj_b"):
        if name == "bias":
            # Mamba init: softplus(bias) log-uniform in [1e-3, 1e-1]; store its inverse softplus.
            dt = torch.exp(torch.rand(shape, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            dt = dt.clamp(min=1e-4)
            return dt + torch.log(-torch.expm1(-dt))
        bound = shape[1] ** -0.5
        return (torch.rand(shape, generator=g) * 2.0 - 1.0) * bound
    if name in ("cls_token", "pos_embed", "mask_embed"):
        return randn(0.02)
    if parent in ("norm", "norm_f") or key.startswith("module.mlp_head.0."):
        # LayerNorm / RMSNorm (also mlp_head.0): weight near 1, bias near 0.
        return (1.0 + randn(0.05)) if name == "weight" else randn(0.02)
    if name == "bias":
        return randn(0.02)
    # Remaining weights (in/out/x proj, convs, patch conv, heads): ~ 1/sqrt(fan_in).
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return randn(fan_in**-0.5)


def official_state_dict(
    embed_dim: int = 192,
    depth: int = 24,
    *,
    fshape: int = 16,
    tshape: int = 16,
    fstride: int = 16,
    tstride: int = 16,
    input_fdim: int = 128,
    input_tdim: int = 1024,
    task: str = "pretrain",
    n_classes: int = 35,
    seed: int = 0,
    vim_num_classes: int = VIM_NUM_CLASSES,
    rms_norm: bool = False,
) -> dict[str, torch.Tensor]:
    """A deterministic random state dict with the official keys, shapes, dtypes and order.

    Arguments are as in :func:`official_key_shapes`. All tensors are float32 except
    ``module.p_input_fdim`` / ``module.p_input_tdim`` (pretrain only): 0-dim int64 holding
    ``input_fdim`` / ``input_tdim``, as the fine-tuning loader reads with ``.item()``.

    Values are plausible, not trained: A_log/A_b_log = log(1..16) on each row plus N(0, 0.05)
    noise; D/D_b = 1 + N(0, 0.05); dt_proj biases = inverse softplus of a log-uniform
    [1e-3, 1e-1] step; dt_proj weights U(+-dt_rank^-0.5); norm weights ~1, biases ~0;
    cls/pos/mask embeddings N(0, 0.02); other weights N(0, 1/fan_in). The small noise keeps
    forward/backward twins and different layers apart, so a test can catch an importer that
    swaps them. Each key has its own seed (``seed`` and the key name), so keys with the same
    shape hold the same values in pretrain and fine-tuned dicts.
    """
    shapes = official_key_shapes(
        embed_dim,
        depth,
        fshape=fshape,
        tshape=tshape,
        fstride=fstride,
        tstride=tstride,
        input_fdim=input_fdim,
        input_tdim=input_tdim,
        task=task,
        n_classes=n_classes,
        seed=seed,
        vim_num_classes=vim_num_classes,
        rms_norm=rms_norm,
    )
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        t = _value(key, shape, seed=seed, input_fdim=input_fdim, input_tdim=input_tdim)
        if key not in _INT_KEYS:
            t = t.to(torch.float32).contiguous()
        assert tuple(t.shape) == shape, (key, tuple(t.shape), shape)
        out[key] = t
    return out


def param_count(
    embed_dim: int,
    depth: int = 24,
    *,
    fshape: int = 16,
    tshape: int = 16,
    input_fdim: int = 128,
    input_tdim: int = 1024,
) -> dict[str, int]:
    """Parameter counts of the official backbone, by part (LayerNorm, bimamba v2).

    ``backbone`` (layers + norm_f + patch_embed + cls_token, no pos_embed, no heads) is
    the convention that matches the published 6.8M / 25.1M / 96.3M.
    """
    shapes = official_key_shapes(
        embed_dim,
        depth,
        fshape=fshape,
        tshape=tshape,
        fstride=fshape,
        tstride=tshape,
        input_fdim=input_fdim,
        input_tdim=input_tdim,
        task="pretrain",
    )

    def total(pred) -> int:
        return sum(math.prod(s) for k, s in shapes.items() if pred(k))

    parts = {
        "layers": total(lambda k: ".v.layers." in k),
        "norm_f": total(lambda k: ".v.norm_f." in k),
        "patch_embed": total(lambda k: ".v.patch_embed." in k),
        "cls_token": total(lambda k: k.endswith(".v.cls_token")),
        "pos_embed": total(lambda k: k.endswith(".v.pos_embed")),
        "vim_head": total(lambda k: ".v.head." in k),
        "pretrain_heads": total(lambda k: "predlayer" in k or k.endswith("mask_embed")),
    }
    parts["backbone"] = parts["layers"] + parts["norm_f"] + parts["patch_embed"] + parts["cls_token"]
    return parts
