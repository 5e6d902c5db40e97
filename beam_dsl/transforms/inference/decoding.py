"""The fast decoding path of HUGGINGFACE MODELs with ``CALL generate(...)`` (docs/MODELS.md).

Hugging Face ``generate`` copies each image's encoder output once per return
sequence (``num_return_sequences`` times), grows its key/value caches step by
step and launches every kernel of every step from Python. For an image
encoder-decoder whose decoder is BERT-shaped (self-attention, cross-attention
to the encoder's output, feed-forward, each followed by its norm: BLIP's text
decoder, a VisionEncoderDecoder with a BERT decoder) or GPT-2 with
cross-attention (the same parts, each preceded by its norm: a
VisionEncoderDecoder with a GPT2LMHeadModel decoder, e.g.
nlpconnect/vit-gpt2-image-captioning) :class:`FastDecoder` produces the same
tokens another way, with one decode loop for both (:class:`_BertLayers` and
:class:`_Gpt2Layers` tell it where each decoder keeps its parts):

* the encoder runs once per image and its cross-attention keys and values are
  computed once per image: the queries of an image's captions attend to them
  together (no copies);
* the self-attention keys and values live in fixed-size buffers (one slot per
  position), attention is ``scaled_dot_product_attention``;
* on a CUDA device the decoding steps are captured as CUDA graphs (chunks of
  :data:`CHUNK` steps) and replayed; whether every sequence has ended is read
  one chunk late, so the GPU never waits for the host between chunks.

The token rules are those of ``generate``: greedy (argmax) or sampling with
``temperature``, ``top_k`` (default 50) and ``top_p``, ``min_length`` (the end
token is forbidden before it), ``max_length`` / ``max_new_tokens``, sequences
padded after their end token and the output cut where the last one ended.
Sampling draws from exactly ``generate``'s distribution (Gumbel-max over the
kept logits) but not with its random numbers. Anything else ``generate`` can
do (beams, penalties, prompts, other decoders: relative positions, TrOCR, ...;
a max_length beyond the decoder's positions) is left to ``generate``:
:func:`fast_decoder` says why.

Beam-free: torch is imported by the caller's model; this module needs it only
when a decoder is built.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

CHUNK = 8  # decoding steps per CUDA graph; the end-of-all check lags one chunk
_CAPTURING = threading.Lock()  # one capture at a time when runner threads share the GPU
# generate()'s own defaults for the options the fast path honours
DEFAULTS = {"max_length": 20, "min_length": 0, "do_sample": False, "top_k": 50, "top_p": 1.0,
            "temperature": 1.0, "num_return_sequences": 1}
# options that do not change which tokens come out, at these values (None: any value)
NEUTRAL = {
    "num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "renormalize_logits": False, "output_attentions": False,
    "output_hidden_states": False, "output_scores": False, "output_logits": False,
    "return_dict_in_generate": False, "use_cache": True, "remove_invalid_values": False,
    "length_penalty": None, "early_stopping": None, "bos_token_id": None, "eos_token_id": None,
    "pad_token_id": None, "decoder_start_token_id": None, "transformers_version": None,
    "_from_model_config": None, "compile_config": None, "disable_compile": None,
    "num_beam_groups": 1, "diversity_penalty": 0.0, "low_memory": None,
}


@dataclass(frozen=True)
class Sampling:
    """The token rules of one ``generate`` call."""

    max_length: int
    min_length: int
    do_sample: bool
    top_k: int
    top_p: float
    temperature: float
    per_input: int  # num_return_sequences


@dataclass
class Parts:
    """An encoder-decoder model as the fast path sees it."""

    encode: Any  # pixel_values -> (images, positions, width) the decoder attends to
    decoder: Any  # the LM head model that decodes
    start: int  # the first decoder token
    ends: tuple[int, ...]
    pad: int
    generation_config: Any  # the generation config generate() would start from
    net: Any = None  # the decoder's layers as the decode loop uses them: _BertLayers, _Gpt2Layers


def model_parts(model: Any) -> Parts | str:
    """The :class:`Parts` of ``model``, or why it is not a model the fast path knows."""
    kind = type(model).__name__
    if kind == "BlipForConditionalGeneration":
        text = model.config.text_config
        parts = Parts(_blip_images(model.vision_model), model.text_decoder,
                      text.bos_token_id, _ids(text.sep_token_id), text.pad_token_id,
                      model.text_decoder.generation_config)
    elif kind == "VisionEncoderDecoderModel":
        project = getattr(model, "enc_to_dec_proj", None)

        def encode(pixels):
            states = model.encoder(pixel_values=pixels)[0]
            return project(states) if project is not None else states

        config = model.generation_config
        start = config.decoder_start_token_id
        if start is None:
            start = model.config.decoder_start_token_id
        parts = Parts(encode, model.decoder, start, _ids(config.eos_token_id),
                      config.pad_token_id, config)
    else:
        return f"{kind} is not an image encoder-decoder the fast path knows"
    if parts.start is None or not parts.ends:
        return f"{kind} names no start or end token"
    parts.net = decoder_layers(parts.decoder)
    return parts.net if isinstance(parts.net, str) else parts


def _blip_images(vision: Any) -> Any:
    """BlipVisionModel's last hidden state, its attention through SDPA (transformers runs
    BLIP's vision attention eagerly: scores written out, softmax, product; same math)."""

    def encode(pixels: Any) -> Any:
        import torch.nn.functional as F  # noqa: N812 - the usual name

        x = vision.embeddings(pixels)
        images, positions, width = x.shape
        for layer in vision.encoder.layers:
            attention = layer.self_attn
            qkv = (attention.qkv(layer.layer_norm1(x))
                   .reshape(images, positions, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4))
            context = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2],
                                                     scale=attention.scale)
            x = x + attention.projection(context.transpose(1, 2).reshape(images, positions,
                                                                         width))
            x = x + layer.mlp(layer.layer_norm2(x))
        return vision.post_layernorm(x)

    return encode


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))


def decoder_layers(decoder: Any) -> _BertLayers | _Gpt2Layers | str:
    """The decode loop's view of ``decoder``, or why the fast path does not know it."""
    kind = type(decoder).__name__
    if hasattr(decoder, "bert") and hasattr(decoder, "cls"):
        if getattr(decoder.config, "position_embedding_type", "absolute") != "absolute":
            return f"its decoder {kind} has {decoder.config.position_embedding_type} positions"
        blocks = decoder.bert.encoder.layer
        net: Any = _BertLayers
    elif kind == "GPT2LMHeadModel":
        blocks = decoder.transformer.h
        net = _Gpt2Layers
    else:
        return f"its decoder {kind} is neither BERT-shaped nor GPT2LMHeadModel"
    if not all(hasattr(block, "crossattention") for block in blocks):
        return f"its decoder {kind} has no cross-attention"
    return net(decoder)


class _BertLayers:
    """A BERT-shaped decoder (BLIP's text decoder, BertLMHeadModel): post-norm, each
    attention's and the feed-forward's output module adds the residual, then normalizes.

    What the decode loop (:meth:`_Run._step`) asks of a decoder: ``embed`` the tokens at a
    position; then for each of ``layers``: the self-attention queries, keys and values of
    ``x``, the output of its attended ``context``, the cross-attention queries, their
    output, the feed-forward; then the ``logits``. Tensors are (rows, 1, width); the
    encoder's keys and values (``cross_keys_values``, once per batch) are (images,
    encoder positions, width). ``positions``: how many positions the decoder embeds.
    """

    def __init__(self, decoder: Any):
        body = decoder.bert
        self.layers, self.embeddings, self.head = body.encoder.layer, body.embeddings, decoder.cls
        own = self.layers[0].attention.self
        self.heads, self.head_size = own.num_attention_heads, own.attention_head_size
        self.positions = self.embeddings.position_embeddings.num_embeddings
        types = getattr(self.embeddings, "token_type_embeddings", None)
        self.type_embedding = types.weight[0] if types is not None else None

    def scale(self, layer: Any) -> float | None:
        """The attention scale (None: SDPA's 1 / sqrt(head size), BERT's)."""
        return None

    def embed(self, tokens: Any, position: Any) -> Any:
        e = self.embeddings
        x = e.word_embeddings(tokens) + e.position_embeddings(position)
        if self.type_embedding is not None:
            x = x + self.type_embedding
        return e.LayerNorm(x)

    def self_query_key_value(self, layer: Any, x: Any) -> tuple[Any, Any, Any]:
        own = layer.attention.self
        return own.query(x), own.key(x), own.value(x)

    def self_output(self, layer: Any, context: Any, x: Any) -> Any:
        return layer.attention.output(context, x)

    def cross_query(self, layer: Any, x: Any) -> Any:
        return layer.crossattention.self.query(x)

    def cross_keys_values(self, layer: Any, memory: Any) -> tuple[Any, Any]:
        cross = layer.crossattention.self
        return cross.key(memory), cross.value(memory)

    def cross_output(self, layer: Any, context: Any, x: Any) -> Any:
        return layer.crossattention.output(context, x)

    def feed_forward(self, layer: Any, x: Any) -> Any:
        return layer.output(layer.intermediate(x), x)

    def logits(self, x: Any) -> Any:
        return self.head(x)


class _Gpt2Layers:
    """GPT-2 with cross-attention (GPT2LMHeadModel, add_cross_attention=True, the decoder
    of e.g. nlpconnect/vit-gpt2-image-captioning): pre-norm (ln_1, ln_cross_attn, ln_2
    before each part, the residual added after it, ln_f before the LM head), fused
    projections (c_attn: queries, keys and values; the cross-attention's c_attn: the
    encoder's keys and values, q_attn its queries), learned positions (wpe).

    It answers the same questions as :class:`_BertLayers`.
    """

    def __init__(self, decoder: Any):
        body = decoder.transformer
        self.layers, self.words, self.position_embeddings = body.h, body.wte, body.wpe
        self.final_norm, self.head = body.ln_f, decoder.lm_head
        own = self.layers[0].attn
        self.heads, self.head_size, self.width = own.num_heads, own.head_dim, own.split_size
        self.positions = self.position_embeddings.num_embeddings

    def scale(self, layer: Any) -> float:
        """GPT-2's scale: 1 / sqrt(head size) or 1, divided by the layer's number if
        scale_attn_by_inverse_layer_idx (its cross-attention uses the same)."""
        return layer.attn.scaling

    def embed(self, tokens: Any, position: Any) -> Any:
        return self.words(tokens) + self.position_embeddings(position)

    def self_query_key_value(self, layer: Any, x: Any) -> tuple[Any, Any, Any]:
        return layer.attn.c_attn(layer.ln_1(x)).split(self.width, dim=-1)

    def self_output(self, layer: Any, context: Any, x: Any) -> Any:
        return x + layer.attn.c_proj(context)

    def cross_query(self, layer: Any, x: Any) -> Any:
        return layer.crossattention.q_attn(layer.ln_cross_attn(x))

    def cross_keys_values(self, layer: Any, memory: Any) -> tuple[Any, Any]:
        return layer.crossattention.c_attn(memory).split(self.width, dim=-1)

    def cross_output(self, layer: Any, context: Any, x: Any) -> Any:
        return x + layer.crossattention.c_proj(context)

    def feed_forward(self, layer: Any, x: Any) -> Any:
        return x + layer.mlp(layer.ln_2(x))

    def logits(self, x: Any) -> Any:
        return self.head(self.final_norm(x))


def sampling_rules(generation_config: Any, kwargs: dict[str, Any]) -> Sampling | str:
    """The :class:`Sampling` of ``generate(**kwargs)``, or the option the fast path lacks."""
    merged = {k: v for k, v in generation_config.to_dict().items() if v is not None}
    merged.update({k: v for k, v in kwargs.items() if v is not None})
    for key, value in merged.items():
        if key in DEFAULTS or key == "max_new_tokens":
            continue
        if key not in NEUTRAL:
            return f"generate option {key}={value!r}"
        if NEUTRAL[key] is not None and value != NEUTRAL[key]:
            return f"generate option {key}={value!r}"
    rule = {k: merged.get(k, v) for k, v in DEFAULTS.items()}
    if "max_new_tokens" in merged:
        rule["max_length"] = 1 + int(merged["max_new_tokens"])  # the prompt is the start token
    if not rule["do_sample"] and rule["num_return_sequences"] > 1:
        return "num_return_sequences > 1 without do_sample (generate refuses it)"
    if rule["do_sample"] and not rule["temperature"] > 0:
        return f"temperature={rule['temperature']!r} (generate refuses it)"
    if not rule["max_length"] > 1:
        return f"max_length={rule['max_length']!r}"
    return Sampling(int(rule["max_length"]), int(rule["min_length"]), bool(rule["do_sample"]),
                    int(rule["top_k"] or 0), float(rule["top_p"]), float(rule["temperature"]),
                    int(rule["num_return_sequences"]))


def fast_decoder(model: Any, kwargs: dict[str, Any]) -> FastDecoder | str:
    """A :class:`FastDecoder` for ``model.generate(**kwargs)``, or why ``generate`` must run."""
    parts = model_parts(model)
    if isinstance(parts, str):
        return parts
    rules = sampling_rules(parts.generation_config, kwargs)
    if isinstance(rules, str):
        return rules
    if rules.max_length > parts.net.positions:  # generate fails, or not, when it gets there
        return f"max_length={rules.max_length} beyond the decoder's {parts.net.positions} positions"
    return FastDecoder(parts, rules)


class FastDecoder:
    """Decodes batches of images with one :class:`_Run` (buffers, graphs) per batch bucket."""

    def __init__(self, parts: Parts, rules: Sampling):
        import torch

        self.parts, self.rules, self._torch = parts, rules, torch
        first = next(parts.decoder.parameters())
        self.device, self.dtype = first.device, first.dtype
        self.graphs = self.device.type == "cuda"
        self.runs: dict[int, _Run] = {}

    def describe(self) -> str:
        r = self.rules
        how = (f"sampling top_k={r.top_k} top_p={r.top_p} temperature={r.temperature}"
               if r.do_sample else "greedy")
        graphs = ", CUDA graphs" if self.graphs else ""
        return (f"fast decoding path ({type(self.parts.decoder).__name__}, shared "
                f"cross-attention, static caches{graphs}; {how}, max_length={r.max_length})")

    def generate(self, pixel_values: Any) -> Any:
        """``generate(pixel_values=...)``'s token ids: (images x per_input, length)."""
        torch = self._torch
        images = pixel_values.shape[0]
        with torch.inference_mode():
            memory = self.parts.encode(pixel_values.to(self.device, self.dtype))
            rows = images * self.rules.per_input
            if not self.graphs:  # a CPU: buffers of this very size, steps run eagerly
                return _Run(self, images, memory.shape[1], graphs=False).decode(memory, rows)
            bucket = 1 << max(3, (images - 1).bit_length())  # 8, 16, ... so graphs are reused
            run = self.runs.get(bucket)
            if run is None or run.positions != memory.shape[1]:
                run = self.runs[bucket] = _Run(self, bucket, memory.shape[1], graphs=True)
            if bucket > images:
                memory = torch.cat([memory, memory[:1].expand(bucket - images, -1, -1)])
            return run.decode(memory, rows)


class _Run:
    """Fixed-size state of one batch size: caches, tokens, and (on a GPU) the step graphs."""

    def __init__(self, owner: FastDecoder, images: int, positions: int, graphs: bool):
        torch = self._torch = owner._torch
        self.rules, self.parts, self.images, self.positions = owner.rules, owner.parts, images, \
            positions
        self.net = owner.parts.net
        self.heads, self.head_size = self.net.heads, self.net.head_size
        rows, length = images * self.rules.per_input, self.rules.max_length
        device, dtype = owner.device, owner.dtype
        shape = (len(self.net.layers), rows, self.heads, length, self.head_size)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        cross = (len(self.net.layers), images, self.heads, positions, self.head_size)
        self.cross_keys = torch.zeros(cross, device=device, dtype=dtype)
        self.cross_values = torch.zeros_like(self.cross_keys)
        self.tokens = torch.zeros(rows, length, dtype=torch.long, device=device)
        self.ended_at = torch.zeros(rows, dtype=torch.long, device=device)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.slots = torch.arange(length, device=device)
        self.ends = torch.tensor(self.parts.ends, device=device)
        self.graphs: list[Any] = []  # one per chunk of steps
        if graphs:
            with _CAPTURING:
                self._capture()

    # ------------------------------------------------------------ one step

    def _step(self, limit: int) -> None:
        """Chooses the next token of every sequence; ``limit``: the self-attention slots
        read (at least position + 1: a chunk's graph reads only the slots it can reach)."""
        torch, F = self._torch, self._torch.nn.functional  # noqa: N806
        rows, images, heads, size = self.tokens.shape[0], self.images, self.heads, self.head_size
        per = self.rules.per_input
        current = self.tokens.gather(1, self.position.view(1, 1).expand(rows, 1))[:, 0]
        net = self.net
        x = net.embed(current, self.position).unsqueeze(1)  # (rows, 1, width)
        seen = (self.slots[:limit] <= self.position).view(1, 1, 1, -1)
        slot = self.position.view(1)
        for i, layer in enumerate(net.layers):
            scale = net.scale(layer)
            q, k, v = (t.view(rows, 1, heads, size).transpose(1, 2)
                       for t in net.self_query_key_value(layer, x))
            self.keys[i].index_copy_(2, slot, k)
            self.values[i].index_copy_(2, slot, v)
            context = F.scaled_dot_product_attention(q, self.keys[i, :, :, :limit],
                                                     self.values[i, :, :, :limit],
                                                     attn_mask=seen, scale=scale)
            a = net.self_output(layer, context.transpose(1, 2).reshape(rows, 1, -1), x)
            # an image's per captions ask its one copy of the encoder's keys and values
            qc = net.cross_query(layer, a).view(images, per, heads, size).transpose(1, 2)
            context = F.scaled_dot_product_attention(qc, self.cross_keys[i], self.cross_values[i],
                                                     scale=scale)
            c = net.cross_output(layer, context.transpose(1, 2).reshape(rows, 1, -1), a)
            x = net.feed_forward(layer, c)
        logits = net.logits(x[:, 0])  # in the model's dtype
        following = self._choose(logits)
        running = self.ended_at == 0
        following = torch.where(running, following, self.parts.pad)
        ended = running & (following.unsqueeze(1) == self.ends).any(1)
        # ended_at: the index of a sequence's end token (0 while it runs)
        self.ended_at.copy_(torch.where(ended, self.position + 1, self.ended_at))
        self.position += 1
        self.tokens.index_copy_(1, self.position.view(1), following.unsqueeze(1))

    def _choose(self, logits: Any) -> Any:
        """generate()'s next token: min_length, then greedy or temperature/top-k/top-p.

        generate works on the logits in float32; the top k are the same in the model's
        dtype (the conversion keeps order and a temperature does too), so only they are
        converted: the top-k search reads half the bytes.
        """
        torch, rules = self._torch, self.rules
        if rules.min_length > 0:  # the sequence so far is position + 1 tokens long
            short = self.position + 1 < rules.min_length
            logits[:, self.ends] = torch.where(short, float("-inf"), logits[:, self.ends])
        if not rules.do_sample:
            return logits.argmax(-1)
        if 0 < rules.top_k < logits.shape[-1]:
            kept, index = logits.topk(rules.top_k, dim=-1)  # descending
        else:
            kept, index = logits.sort(dim=-1, descending=True)
        kept = kept.float()
        if rules.temperature != 1.0:
            kept = kept / rules.temperature
        if rules.top_p < 1.0:  # generate's TopP: drop the low tail whose mass <= 1 - top_p
            ascending = kept.flip(-1)
            drop = ascending.softmax(-1).cumsum(-1) <= 1 - rules.top_p
            drop[:, -1] = False
            kept = kept.masked_fill(drop.flip(-1), float("-inf"))
        # Gumbel-max: argmax(kept + Gumbel noise) is a draw from softmax(kept)
        noise = -torch.log(-torch.log(torch.rand_like(kept).clamp_(min=1e-20)))
        return index.gather(1, (kept + noise).argmax(-1, keepdim=True))[:, 0]

    # ------------------------------------------------------------ a batch

    def _reset(self, memory: Any) -> None:
        images, heads, size = self.images, self.heads, self.head_size
        for i, layer in enumerate(self.net.layers):
            keys, values = self.net.cross_keys_values(layer, memory)
            self.cross_keys[i].copy_(keys.view(images, -1, heads, size).transpose(1, 2))
            self.cross_values[i].copy_(values.view(images, -1, heads, size).transpose(1, 2))
        self.tokens.fill_(self.parts.pad)
        self.tokens[:, 0] = self.parts.start
        self.ended_at.zero_()
        self.position.zero_()

    def _chunks(self) -> list[tuple[int, int]]:
        """(first position, steps) of each chunk of the max_length - 1 steps."""
        steps = self.rules.max_length - 1
        return [(start, min(CHUNK, steps - start)) for start in range(0, steps, CHUNK)]

    def _capture(self) -> None:
        torch = self._torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: cuBLAS handles, kernel choices
            for _ in range(2):
                self._step(self.rules.max_length)
        torch.cuda.current_stream().wait_stream(side)
        pool = None
        for start, steps in self._chunks():
            graph = torch.cuda.CUDAGraph()
            # thread_local: other Beam worker threads may use the GPU meanwhile
            with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                for _ in range(steps):
                    self._step(start + steps)
            pool = graph.pool()
            self.graphs.append(graph)

    def decode(self, memory: Any, rows: int) -> Any:
        """The tokens of the first ``rows`` sequences (the rest pad a bucket)."""
        torch = self._torch
        self._reset(memory)
        flag = None
        for chunk, (start, steps) in enumerate(self._chunks()):
            if self.graphs:
                self.graphs[chunk].replay()
                if flag is not None:  # all had ended a chunk ago: this chunk only padded
                    flag[1].synchronize()
                    if not bool(flag[0]):
                        break
                # read once the next chunk is queued, so the GPU never waits for the host
                running = torch.empty((), dtype=torch.bool, pin_memory=True)
                running.copy_((self.ended_at[:rows] == 0).any(), non_blocking=True)
                flag = (running, torch.cuda.Event())
                flag[1].record()
            else:
                for position in range(start, start + steps):
                    self._step(position + 1)
                if not bool((self.ended_at[:rows] == 0).any()):
                    break
        return self._trimmed(rows)

    def _trimmed(self, rows: int) -> Any:
        """generate() stops when every sequence has ended: cut the tokens there."""
        ended = self.ended_at[:rows]
        length = self.tokens.shape[1]
        if bool((ended > 0).all()):
            length = int(ended.max()) + 1
        return self.tokens[:rows, :length].clone()
