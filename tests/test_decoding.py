"""The fast decoding path of CALL generate (beam_dsl/transforms/inference/decoding.py).

Tiny models built here from configs with random weights (no downloads): BLIP
(the caption_ranking example's), and VisionEncoderDecoders of a ViT encoder and
a decoder with cross-attention: BERT, or GPT-2 (the layout of
nlpconnect/vit-gpt2-image-captioning). In float32 the fast path's greedy tokens
must equal generate's; its sampling must honour generate's token rules.
"""

from __future__ import annotations

import os
import sys

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from beam_dsl.ir import Call  # noqa: E402
from beam_dsl.ir.model import ModelConfig  # noqa: E402
from beam_dsl.transforms.inference.base import gpu_visible  # noqa: E402
from beam_dsl.transforms.inference.decoding import FastDecoder, fast_decoder  # noqa: E402
from beam_dsl.transforms.inference.predictors import build_predictor  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 2}
VOCAB, START, END, PAD = 60, 58, 3, 0


def _blip():
    from transformers import BlipConfig, BlipForConditionalGeneration

    text = {**SMALL, "vocab_size": VOCAB, "encoder_hidden_size": 32, "bos_token_id": START,
            "sep_token_id": END, "pad_token_id": PAD}
    config = BlipConfig(text_config=text,
                        vision_config={**SMALL, "image_size": 32, "patch_size": 8})
    torch.manual_seed(0)
    return BlipForConditionalGeneration(config).eval()


def _vision_encoder_decoder(decoder: str = "bert", start: int = START, end: int = END,
                            pad: int = PAD, **gpt2):
    """ViT (width 48) + a decoder of width 32 with cross-attention (so enc_to_dec_proj);
    ``gpt2``: more of GPT2Config's options."""
    from transformers import (
        BertConfig,
        GPT2Config,
        TrOCRConfig,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )

    encoder = ViTConfig(**{**SMALL, "hidden_size": 48}, image_size=32, patch_size=8)
    if decoder == "bert":
        text = BertConfig(**SMALL, vocab_size=VOCAB, is_decoder=True, add_cross_attention=True)
    elif decoder == "gpt2":  # weights 20x GPT-2's 0.02: else every caption repeats one token
        text = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB,
                          add_cross_attention=True, initializer_range=0.4,
                          bos_token_id=start, eos_token_id=end, pad_token_id=pad, **gpt2)
    else:
        text = TrOCRConfig(d_model=32, decoder_layers=2, decoder_attention_heads=2,
                           decoder_ffn_dim=64, vocab_size=VOCAB)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, text)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = start, pad, end
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=config).eval()
    model.generation_config.decoder_start_token_id = start
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = pad, end
    return model


def _vit_gpt2():
    return _vision_encoder_decoder("gpt2")


def _nlpconnect_tokens():
    """GPT-2's own layout: one token (its vocabulary's last) starts, ends and pads."""
    return _vision_encoder_decoder("gpt2", VOCAB - 1, VOCAB - 1, VOCAB - 1)


def _ends_sometimes(model, boost: float = 2.5, end: int = END):
    """Raise the end token's logit by ``boost`` so that sequences end, at different lengths
    (GPT-2's head has no bias: ln_f's bias moves along the end token's tied embedding)."""
    decoder = model.text_decoder if hasattr(model, "text_decoder") else model.decoder
    with torch.no_grad():
        if hasattr(decoder, "cls"):
            decoder.cls.predictions.decoder.bias[end] += boost
        else:
            embedding = decoder.transformer.wte.weight[end]
            decoder.transformer.ln_f.bias += boost * embedding / embedding.square().sum()
    return model


def _pixels(images: int = 4, seed: int = 1):
    torch.manual_seed(seed)
    return torch.randn(images, 3, 32, 32)


def _both(model, pixels, **kwargs):
    """(generate's tokens, the fast path's tokens) for the same call."""
    fast = fast_decoder(model, kwargs)
    assert isinstance(fast, FastDecoder), fast
    with torch.no_grad():
        return model.generate(pixel_values=pixels, **kwargs), fast.generate(pixels)


# ---------------------------------------------------------------- same answers as generate


ARCHITECTURES = pytest.mark.parametrize("build", [_blip, _vision_encoder_decoder, _vit_gpt2],
                                        ids=["blip", "vit-bert", "vit-gpt2"])


def _vit_gpt2_scaled_by_layer():
    return _vision_encoder_decoder("gpt2", scale_attn_by_inverse_layer_idx=True)


@pytest.mark.parametrize(("build", "boost"), [
    (_blip, 2.5), (_vision_encoder_decoder, 2.5), (_vit_gpt2, 4.0),
    (_vit_gpt2_scaled_by_layer, 4.0),
], ids=["blip", "vit-bert", "vit-gpt2", "vit-gpt2-scaled-by-layer"])
def test_greedy_tokens_equal_generates_in_float32(build, boost):
    model = _ends_sometimes(build(), boost)
    expected, tokens = _both(model, _pixels(), max_length=15, min_length=4)
    assert torch.equal(tokens, expected)
    ends = (expected == END).any(1)
    assert ends.any() and not ends.all() or expected.shape[1] < 15  # some end, some run on


@ARCHITECTURES
def test_top_k_1_sampling_of_several_captions_equals_generates(build):
    model = _ends_sometimes(build(), 1.5)
    call = {"max_length": 12, "min_length": 3, "num_return_sequences": 5, "do_sample": True,
            "top_k": 1}
    expected, tokens = _both(model, _pixels(3), **call)
    assert tokens.shape[0] == 15 and torch.equal(tokens, expected)


@pytest.mark.parametrize("call", [
    {"max_length": 13, "min_length": 5},
    {"max_new_tokens": 9},
    {"max_new_tokens": 10, "min_length": 3, "num_return_sequences": 4, "do_sample": True,
     "top_k": 1},
], ids=["greedy", "max_new_tokens", "several"])
def test_gpt2s_one_token_to_start_end_and_pad_decodes_as_generate(call):
    model = _ends_sometimes(_nlpconnect_tokens(), 1.5, VOCAB - 1)
    expected, tokens = _both(model, _pixels(3), **call)
    assert torch.equal(tokens, expected)
    assert (expected[:, 1:] == VOCAB - 1).any()  # some sequences do end


@ARCHITECTURES
def test_generate_stops_where_every_sequence_has_ended(build):
    model = _ends_sometimes(build(), 50.0)  # the end token wins as soon as it is allowed
    expected, tokens = _both(model, _pixels(), max_length=20, min_length=6)
    assert torch.equal(tokens, expected)
    assert tokens.shape[1] == 7 and (tokens[:, 6] == END).all()


# ---------------------------------------------------------------- sampling rules


def _first_steps(model, pixels, per_input: int, **kwargs):
    """Tokens of one sampled step for ``per_input`` sequences of one image."""
    fast = fast_decoder(model, {"max_length": 2, "do_sample": True,
                                "num_return_sequences": per_input, **kwargs})
    return fast.generate(pixels[:1])[:, 1]


def _step_logits(model, pixels):
    start = torch.tensor([[START]])
    with torch.no_grad():
        if hasattr(model, "text_decoder"):
            memory = model.vision_model(pixel_values=pixels[:1])[0]
            return model.text_decoder(input_ids=start, encoder_hidden_states=memory).logits[0, -1]
        return model(pixel_values=pixels[:1], decoder_input_ids=start).logits[0, -1]


SAMPLERS = pytest.mark.parametrize("build", [_blip, _vit_gpt2], ids=["blip", "vit-gpt2"])


@SAMPLERS
def test_sampling_draws_from_softmax_of_the_top_k(build):
    model, pixels = build(), _pixels()
    logits = _step_logits(model, pixels)
    top = logits.topk(4)
    torch.manual_seed(5)
    drawn = _first_steps(model, pixels, 8000, top_k=4)
    assert set(drawn.tolist()) <= set(top.indices.tolist())
    frequency = torch.stack([(drawn == i).float().mean() for i in top.indices])
    assert torch.allclose(frequency, top.values.softmax(-1), atol=0.03)


@SAMPLERS
def test_top_p_keeps_generates_nucleus_and_temperature_sharpens(build):
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    model, pixels = build(), _pixels()
    logits = _step_logits(model, pixels).unsqueeze(0)
    scaled = TemperatureLogitsWarper(0.5)(None, logits.clone())
    # a top_p whose nucleus is the three likeliest tokens, however peaked the random model
    likeliest = scaled[0].softmax(-1).sort(descending=True).values
    top_p = float(likeliest[:2].sum() + likeliest[2] / 2)
    nucleus = TopPLogitsWarper(top_p)(None, scaled)[0]
    allowed = set(torch.nonzero(nucleus > float("-inf"))[:, 0].tolist())
    assert 1 < len(allowed) < VOCAB
    torch.manual_seed(6)
    drawn = _first_steps(model, pixels, 6000, top_k=0, top_p=top_p, temperature=0.5)
    probabilities = nucleus.softmax(-1)
    assert set(drawn.tolist()) <= allowed  # only kept tokens are drawn ...
    likely = {t for t in allowed if probabilities[t] > 0.005}  # ... and each likely one is
    assert likely <= set(drawn.tolist()), {t: float(probabilities[t]) for t in allowed}
    for token in allowed:
        assert float((drawn == token).float().mean()) == pytest.approx(
            float(probabilities[token]), abs=0.03)


@SAMPLERS
def test_temperature_towards_zero_samples_the_greedy_tokens(build):
    model = _ends_sometimes(build(), 1.5)
    pixels = _pixels(3)
    greedy = fast_decoder(model, {"max_length": 12}).generate(pixels)
    cold = fast_decoder(model, {"max_length": 12, "do_sample": True, "temperature": 1e-4,
                                "top_k": 0}).generate(pixels)
    assert torch.equal(cold, greedy)


@SAMPLERS
def test_min_length_forbids_the_end_and_max_length_bounds_the_length(build):
    model = _ends_sometimes(build(), 4.0)
    pixels = _pixels(6)
    torch.manual_seed(7)
    sampled = fast_decoder(model, {"max_length": 14, "min_length": 5, "do_sample": True,
                                   "num_return_sequences": 4}).generate(pixels)
    assert sampled.shape[1] <= 14 and not (sampled[:, :5] == END).any()
    assert (sampled[:, 5:] == END).any()  # the end token does come, once allowed
    # after its end token a sequence holds only padding
    for row in sampled.tolist():
        if END in row:
            assert set(row[row.index(END) + 1:]) <= {PAD}
    never = _ends_sometimes(build(), -1e4)
    assert fast_decoder(never, {"max_new_tokens": 6}).generate(pixels).shape == (6, 7)
    assert fast_decoder(never, {"max_length": 9, "do_sample": True}).generate(pixels).shape \
        == (6, 9)


# ---------------------------------------------------------------- which path


@pytest.mark.parametrize(("build", "call", "why"), [
    (_blip, {"num_beams": 2}, "generate option num_beams=2"),
    (_blip, {"repetition_penalty": 1.2}, "generate option repetition_penalty=1.2"),
    (_blip, {"num_return_sequences": 2}, "without do_sample"),
    (lambda: _vision_encoder_decoder("trocr"), {},
     "its decoder TrOCRForCausalLM is neither BERT-shaped nor GPT2LMHeadModel"),
    (_vit_gpt2, {"max_length": 1025}, "max_length=1025 beyond the decoder's 1024 positions"),
])
def test_what_the_fast_path_lacks_is_left_to_generate(build, call, why):
    reason = fast_decoder(build(), call)
    assert isinstance(reason, str) and why in reason


def test_a_gpt2_decoder_takes_the_fast_path():
    fast = fast_decoder(_vit_gpt2(), {"max_new_tokens": 16, "do_sample": True, "top_k": 5})
    assert isinstance(fast, FastDecoder)
    assert fast.describe() == ("fast decoding path (GPT2LMHeadModel, shared cross-attention, "
                               "static caches; sampling top_k=5 top_p=1.0 temperature=1.0, "
                               "max_length=17)")


def test_a_text_model_is_left_to_generate():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=VOCAB))
    assert "not an image encoder-decoder" in fast_decoder(model, {})


def _blip_model(tiny_models, **call):
    config = ModelConfig("blip", "huggingface", path=tiny_models["blip"],
                         call=Call("generate", kwargs=call), input=("image",),
                         output=("captions",), device="cpu")
    return build_predictor(config)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    folder = os.path.join(REPO, "pipelines", "caption_ranking")
    sys.path.insert(0, folder)
    try:
        build = __import__("build_tiny_models").build
    finally:
        sys.path.remove(folder)
    return build(str(tmp_path_factory.mktemp("tiny_models")))


def test_a_model_says_which_path_and_captions_as_generate_would(tiny_models, caplog):
    from PIL import Image

    call = {"max_length": 10, "num_return_sequences": 2, "do_sample": True, "top_k": 1}
    with caplog.at_level("INFO"):
        model = _blip_model(tiny_models, **call)
    assert model.decoding.startswith("fast decoding path (BlipTextLMHeadModel")
    assert "MODEL blip: CALL generate runs through the fast decoding path" in caplog.text
    image = Image.new("RGB", (40, 30), (200, 30, 90))
    captions = model.predict(pd.DataFrame({"image": [image]}))["captions"].iloc[0]
    with torch.no_grad():
        inputs = model.processor(images=[image], return_tensors="pt")
        tokens = model.model.generate(**inputs, **call)
    assert captions == [t.strip() for t in model.processor.batch_decode(
        tokens, skip_special_tokens=True)]
    beams = _blip_model(tiny_models, max_length=10, num_beams=2)
    assert beams.decoder is None
    assert beams.decoding == "Hugging Face generate (generate option num_beams=2)"
    assert len(beams.predict(pd.DataFrame({"image": [image]}))["captions"].iloc[0]) > 0


@pytest.mark.skipif(not gpu_visible(), reason="no GPU visible")
@SAMPLERS
def test_cuda_graphs_decode_as_the_eager_steps(build):
    model = _ends_sometimes(build()).cuda()
    pixels = _pixels(5).cuda()
    call = {"max_length": 21, "min_length": 4}
    expected = model.generate(pixel_values=pixels, **call)
    fast = fast_decoder(model, call)
    assert fast.graphs
    for _ in range(2):  # the second call replays the captured graphs
        assert torch.equal(fast.generate(pixels), expected)


def test_an_ensembles_next_model_reuses_the_images_decoded_for_the_last(tmp_path):
    import numpy as np
    from PIL import Image

    from beam_dsl.transforms.inference.image_inputs import decode_images

    pytest.importorskip("torchvision")  # decoding on a device is torchvision's nvJPEG

    paths = [str(tmp_path / f"{i}.jpg") for i in range(2)]
    for i, path in enumerate(paths):
        Image.fromarray(np.full((8, 8, 3), 60 * i, dtype=np.uint8)).save(path)
    first, _ = decode_images(paths, "cpu")
    again, _ = decode_images(paths, "cpu")
    assert all(a is b for a, b in zip(first, again, strict=True))  # not decoded twice
    Image.fromarray(np.full((8, 8, 3), 250, dtype=np.uint8)).save(paths[1])
    os.utime(paths[1], ns=(1, 1))  # a changed file is decoded anew
    changed, _ = decode_images(paths, "cpu")
    assert changed[0] is not first[0] and int(changed[1].float().mean()) > 200
