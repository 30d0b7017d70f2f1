"""ATI pipelines with random weights, built locally (no hub): for tests and GPU benchmarks.

``tiny`` runs the whole pipeline on a CPU in seconds; ``mid`` has a 1.3B-class transformer
(Wan2.1 T2V-1.3B's widths and depth with the I2V image branch) and the real VAE's widths,
to measure time per step and memory at 480x832, 81 frames. The tokenizer is a word-level
one made on the spot; every other component is the class the real checkpoints load into.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from tracefield.generate.pipeline import ATIPipeline

SIZES = {
    "tiny": {
        "transformer": dict(num_attention_heads=2, attention_head_dim=8, ffn_dim=32, num_layers=2, text_dim=32, freq_dim=16,
                            image_dim=32, added_kv_proj_dim=16, rope_max_seq_len=64),
        "vae": dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1),
        "text": dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2),
        "image": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
    },
    "mid": {
        "transformer": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096, freq_dim=256,
                            image_dim=1280, added_kv_proj_dim=1536, rope_max_seq_len=1024),
        "vae": dict(base_dim=96, dim_mult=[1, 2, 4, 4], num_res_blocks=2),
        "text": dict(d_model=4096, d_kv=64, d_ff=1024, num_layers=1, num_heads=8),
        "image": dict(hidden_size=1280, intermediate_size=2048, num_hidden_layers=2, num_attention_heads=16, image_size=224, patch_size=14),
    },
}
VOCABULARY = ["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(61)]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A small word-level tokenizer (unknown words map to <unk>), standing in for UMT5's."""
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCABULARY)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def random_pipeline(size: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32) -> ATIPipeline:
    """An :class:`ATIPipeline` of the given size with seeded random weights."""
    dims = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_dim, image_dim = dims["transformer"]["text_dim"], dims["transformer"]["image_dim"]
        transformer = WanTransformer3DModel(patch_size=(1, 2, 2), in_channels=36, out_channels=16, **dims["transformer"])
        vae = AutoencoderKLWan(z_dim=16, temperal_downsample=[False, True, True], **dims["vae"])
        text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(VOCABULARY), relative_attention_num_buckets=8, **{**dims["text"], "d_model": text_dim}))
        image_encoder = CLIPVisionModel(CLIPVisionConfig(**{**dims["image"], "hidden_size": image_dim}))
    image_size = dims["image"]["image_size"]
    processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0)
    pipe = ATIPipeline(tokenizer=word_tokenizer(), text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       image_processor=processor, image_encoder=image_encoder, transformer=transformer)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)
