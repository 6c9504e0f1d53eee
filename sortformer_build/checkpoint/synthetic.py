"""Checkpoints the project makes itself: the published architecture with random weights.

`full` has the exact architecture of NVIDIA's streaming Sortformer v2 / v2.1 (117.7 M
parameters, same graph, shapes and file size); `tiny` keeps the same module types with two
layers and small widths, for fast tests.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sortformer_build.checkpoint.counts import parameter_counts

log = logging.getLogger(__name__)

# (FastConformer layers, d_model, heads, conv channels, Transformer layers, hidden, inner, heads)
_SIZES = {
    "full": (17, 512, 8, 256, 18, 192, 768, 8),
    "tiny": (2, 64, 2, 16, 2, 32, 64, 2),
}


def architecture(size: str) -> dict[str, Any]:
    """NeMo model config of NeMo's `streaming_sortformer_diarizer_4spk-v2` recipe, at `size`."""
    enc_layers, d_model, enc_heads, conv_channels, tf_layers, tf_hidden, tf_inner, tf_heads = _SIZES[size]
    return {
        "sample_rate": 16000,
        "pil_weight": 0.5,
        "ats_weight": 0.5,
        "max_num_of_spks": 4,
        "streaming_mode": True,
        "model_defaults": {"fc_d_model": d_model, "tf_d_model": tf_hidden},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "normalize": "per_feature",
            "window_size": 0.025,
            "sample_rate": 16000,
            "window_stride": 0.01,
            "window": "hann",
            "features": 128,
            "n_fft": 512,
            "frame_splicing": 1,
            "dither": 1e-5,
        },
        "sortformer_modules": {
            "_target_": "nemo.collections.asr.modules.sortformer_modules.SortformerModules",
            "num_spks": 4,
            "dropout_rate": 0.5,
            "fc_d_model": d_model,
            "tf_d_model": tf_hidden,
            "spkcache_len": 188,
            "fifo_len": 0,
            "chunk_len": 188,
            "spkcache_update_period": 188,
            "chunk_left_context": 1,
            "chunk_right_context": 1,
            "spkcache_sil_frames_per_spk": 3,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": 128,
            "feat_out": -1,
            "n_layers": enc_layers,
            "d_model": d_model,
            "subsampling": "dw_striding",
            "subsampling_factor": 8,
            "subsampling_conv_channels": conv_channels,
            "causal_downsampling": False,
            "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos",
            "n_heads": enc_heads,
            "att_context_size": [-1, -1],
            "att_context_style": "regular",
            "xscaling": True,
            "untie_biases": True,
            "pos_emb_max_len": 5000,
            "conv_kernel_size": 9,
            "conv_norm_type": "batch_norm",
            "conv_context_size": None,
            "dropout": 0.1,
            "dropout_pre_encoder": 0.1,
            "dropout_emb": 0.0,
            "dropout_att": 0.1,
        },
        "transformer_encoder": {
            "_target_": "nemo.collections.asr.modules.transformer.transformer_encoders.TransformerEncoder",
            "num_layers": tf_layers,
            "hidden_size": tf_hidden,
            "inner_size": tf_inner,
            "num_attention_heads": tf_heads,
            "attn_score_dropout": 0.5,
            "attn_layer_dropout": 0.5,
            "ffn_dropout": 0.5,
            "hidden_act": "relu",
            "pre_ln": False,
            "pre_ln_final_layer_norm": True,
        },
        "loss": {
            "_target_": "nemo.collections.asr.losses.bce_loss.BCELoss",
            "weight": None,
            "reduction": "mean",
        },
    }


def synthetic_seed(seed: int, version: str) -> int:
    """Each checkpoint version gets its own weights, as the two released checkpoints differ."""
    return zlib.crc32(f"{version}:{seed}".encode())


def make_synthetic_checkpoint(
    destination: Path, size: str, seed: int, version: str, speaker_logit_scale: float
) -> None:
    """Instantiate the architecture with seeded random weights and save it as a .nemo file.

    Batch-norm statistics are randomised too, so the converted graph cannot hide a wrong
    normalisation behind identity statistics.
    """
    import torch
    from nemo.collections.asr.models import SortformerEncLabelModel
    from omegaconf import OmegaConf

    torch.manual_seed(synthetic_seed(seed, version))
    model = SortformerEncLabelModel(cfg=OmegaConf.create(architecture(size)))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        final = model.sortformer_modules.single_hidden_to_spks
        final.weight.mul_(speaker_logit_scale)
        final.bias.mul_(speaker_logit_scale)
    model.eval()
    log.info("Saving %s random-weight checkpoint (%s parameters)", size, f"{parameter_counts(model).total:,}")
    model.save_to(str(destination))


def center_speaker_logits(model: Any, preds: np.ndarray, sharpen: float = 4.0) -> None:
    """Shift the final speaker layer of a random-weight model by each speaker's median logit over
    `preds` (its probabilities on some audio), then scale it by `sharpen`: each speaker is then
    active about half of that audio, with decisive probabilities. Random weights otherwise keep
    every speaker on (or off) throughout, and a DER, blind to speaker names, could not tell a
    broken package from a good one."""
    import torch

    clipped = np.clip(preds, 1e-6, 1 - 1e-6)
    median_logit = torch.from_numpy(np.median(np.log(clipped / (1 - clipped)), axis=0)).float()
    with torch.no_grad():
        final = model.sortformer_modules.single_hidden_to_spks
        final.bias -= median_logit
        final.weight *= sharpen
        final.bias *= sharpen
