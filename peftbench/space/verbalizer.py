"""The verbalizer head (``method.head=verbalizer``): classify with the pretrained LM head instead of a new one.

Each example is written into the task's template (``task.template``, e.g. SST-2 ``"{sentence} It was {mask}."``)
and the class logits are the LM head's logits of the label words (``task.label_words``, in label order, e.g.
``[terrible, great]``) at the scored position: the mask token for a masked LM (BERT, RoBERTa), the last real token
for a causal LM (Llama), which predicts the next word; a causal template ends at ``{mask}`` (what follows it is
dropped). Nothing new is trained at the head: the LM head stays frozen, so the method's parameters are all there is.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from peftbench.space.arch import ARCHITECTURES, ArchMap, get_submodule
from peftbench.space.spec import SpecError

MASK = "mask"


class VerbalizerError(SpecError):
    """A template, label words or model that cannot make a verbalizer."""


@dataclass(frozen=True)
class Template:
    """A task template resolved against a tokenizer: how to write an example, and which tokens score the labels."""

    text: str  # the template as the model reads it ({mask} replaced by the mask token, or cut for a causal LM)
    fields: tuple[str, ...]  # the task's text fields it fills
    label_ids: tuple[int, ...]  # one token id per label, in label order
    mask_token_id: int | None  # None: causal, the last real token is scored

    def fill(self, values: dict[str, str]) -> str:
        return self.text.format(**values)

    @property
    def key(self) -> list:
        """What the tokenisation cache must depend on."""
        return [self.text, list(self.fields), list(self.label_ids), self.mask_token_id]


def template_fields(template: str) -> list[str]:
    """The ``{placeholders}`` of a template, in order (a syntax error in the braces is a VerbalizerError)."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise VerbalizerError(f"task.template={template!r} is not a valid template: {err}") from None


def check_template(task: str, template: str | None, label_words: list[str], text_fields: tuple[str, ...],
                   num_labels: int) -> None:
    """A template names each of the task's text fields once and ``{mask}`` once; one label word per label."""
    if num_labels == 1:
        raise VerbalizerError(f"task {task} is a regression task; head=verbalizer needs classes (use head=linear)")
    if not template:
        raise VerbalizerError(f"task {task} has no task.template; head=verbalizer needs one, e.g. "
                              "'{sentence} It was {mask}.'")
    names = template_fields(template)
    expected = sorted([*text_fields, MASK])
    if sorted(names) != expected:
        raise VerbalizerError(f"task.template={template!r} names {names}; it must name each of "
                              f"{', '.join('{' + n + '}' for n in expected)} exactly once")
    if len(label_words) != num_labels:
        raise VerbalizerError(f"task.label_words={list(label_words)} gives {len(label_words)} words for {num_labels} "
                              f"labels; give one per label, in label order")


def resolve_template(template: str, label_words: list[str], text_fields: tuple[str, ...], tokenizer,
                     causal: bool) -> Template:
    """The template for this tokenizer: the mask token in place of ``{mask}`` (masked LM) or the text cut there
    (causal LM), and each label word's token id (a word that is not one token is an error)."""
    before, _, after = template.partition("{" + MASK + "}")
    spaced = before[-1:].isspace() or not before  # the label word follows a space: BPE tokens carry it
    if causal:
        if template_fields(after):
            raise VerbalizerError(f"task.template={template!r}: a causal LM scores the word after the last token, "
                                  "so the template must end at {mask}; it has text fields after it")
        text = before.rstrip()
        mask_id = None
    else:
        if tokenizer.mask_token is None:
            raise VerbalizerError(f"{type(tokenizer).__name__} has no mask token; a masked-LM verbalizer needs one")
        text = before + tokenizer.mask_token + after
        mask_id = tokenizer.mask_token_id
    ids = []
    for word in label_words:
        tokens = tokenizer((" " if spaced else "") + word.strip(), add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            pieces = tokenizer.convert_ids_to_tokens(tokens)
            raise VerbalizerError(f"label word {word!r} is {len(tokens)} tokens {pieces} for this tokenizer; "
                                  "a verbalizer needs one-token label words")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        raise VerbalizerError(f"task.label_words={list(label_words)} map to the same token; give distinct words")
    return Template(text, tuple(text_fields), tuple(ids), mask_id)


def encode(template: Template, tokenizer, batch: dict[str, list[str]], max_length: int) -> dict[str, list]:
    """Tokenise a batch written into the template. Too long a row is cut in its longest text field, never in the
    template, so the scored position survives truncation."""
    out: dict[str, list] = {}
    for i in range(len(batch[template.fields[0]])):
        values = {f: batch[f][i] for f in template.fields}
        for _ in range(8):
            encoded = tokenizer(template.fill(values))
            over = len(encoded["input_ids"]) - max_length
            if over <= 0:
                break
            longest = max(template.fields, key=lambda f: len(values[f]))
            tokens = tokenizer(values[longest], add_special_tokens=False)["input_ids"]
            values[longest] = tokenizer.decode(tokens[: max(0, len(tokens) - over)])
        else:
            raise VerbalizerError(f"a row does not fit task.max_length={max_length} even with its text cut; "
                                  "the template alone is too long")
        if template.mask_token_id is None:  # causal: the template's last token is scored, not an appended EOS
            special = set(tokenizer.all_special_ids)
            keep = len(encoded["input_ids"])
            while keep > 1 and encoded["input_ids"][keep - 1] in special:
                keep -= 1
            encoded = {key: value[:keep] for key, value in encoded.items()}
        for key, value in encoded.items():
            out.setdefault(key, []).append(value)
    return out


class VerbalizerModel(nn.Module):
    """A pretrained LM (with its LM head) as a classifier: the label words' logits at the scored position.

    It exposes what the injection code reads of a task model (``config``, ``base_model``, the input embeddings,
    the attention implementation), so every method applies unchanged. The scored position is marked by a forward
    pre-hook before any prompt hook runs (``score_mask``), and prompt insertion moves that mark with the tokens.
    """

    def __init__(self, lm: nn.Module, arch: ArchMap, label_ids: tuple[int, ...], mask_token_id: int | None) -> None:
        super().__init__()
        self.lm = lm
        self.config = lm.config
        self.causal = mask_token_id is None
        self.mask_token_id = mask_token_id
        self.register_buffer("label_ids", torch.tensor(label_ids), persistent=False)
        self.lm_head_path = arch.lm_head
        #: the head for parameter counts (relative to this module): the LM head, frozen, never in the budget
        self.peftbench_head_paths = (f"lm.{arch.lm_head}",)
        self.register_forward_pre_hook(self._mark, with_kwargs=True)

    @property
    def base_model(self) -> nn.Module:
        return self.lm.base_model

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def set_attn_implementation(self, name: str) -> None:
        self.lm.set_attn_implementation(name)

    def _mark(self, _module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            kwargs["input_ids"] = args[0]
        input_ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if input_ids is None:
            raise ValueError("the verbalizer needs input_ids to find the scored position")
        if mask is None:
            mask = torch.ones_like(input_ids)
        if self.causal:  # the last real token predicts the next word
            last = (mask * torch.arange(1, mask.shape[1] + 1, device=mask.device)).argmax(1)
            score = torch.zeros_like(mask)
            score[torch.arange(len(last)), last] = 1
        else:
            score = (input_ids == self.mask_token_id).to(mask.dtype)
            counts = score.sum(1)
            if bool((counts != 1).any()):
                raise ValueError(f"verbalizer: each row needs exactly one mask token (id {self.mask_token_id}); "
                                 f"found {counts.tolist()}")
        kwargs["score_mask"] = score
        return (), kwargs

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None, labels=None,
                score_mask=None, **kwargs) -> SequenceClassifierOutput:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                    **extra, **kwargs).last_hidden_state
        scored = hidden[score_mask.bool()]
        if scored.shape[0] != hidden.shape[0]:
            raise RuntimeError(f"verbalizer: {scored.shape[0]} scored positions for {hidden.shape[0]} rows")
        vocab = get_submodule(self.lm, self.lm_head_path)(scored)
        logits = vocab[:, self.label_ids]
        loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


#: Class-name endings of transformers models that hold an LM head (what ``config.architectures`` names).
LM_HEAD_CLASSES = ("ForMaskedLM", "ForCausalLM", "LMHeadModel", "WithLMHead", "ForPreTraining")


def has_lm_head(architectures: list[str]) -> bool:
    """Whether weights saved from these classes (a config's ``architectures``) include an LM head: a bare encoder
    (MiniLM's ``BertModel``) or a classifier does not, and its LM head would be random."""
    return any(str(name).endswith(LM_HEAD_CLASSES) for name in architectures)


def lm_class(model_type: str):
    """AutoModelForMaskedLM or AutoModelForCausalLM for an architecture with an LM head in :mod:`peftbench.space.arch`."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    arch = ARCHITECTURES.get(model_type)
    if arch is None or arch.lm_head is None:
        usable = sorted(k for k, a in ARCHITECTURES.items() if a.lm_head)
        raise VerbalizerError(f"head=verbalizer: architecture {model_type!r} has no LM head mapping; "
                              f"valid: {', '.join(usable)}")
    return arch, (AutoModelForCausalLM if arch.causal else AutoModelForMaskedLM)
