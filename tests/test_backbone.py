"""The stack reproduces the model's own forward; discovery, pad tokens, layer checks."""

import re

import pytest
import torch

from olft.backbone import Stack
from olft.data import collate, encode
from olft.errors import OlftError
from olft.families import find_layers
from olft.layerspec import Strategy, middle_bucket, parse_candidates, parse_layers, parse_strategies
from olft.loading import load_stack
from tiny import make_config

FAMS = ("gpt2", "llama", "mistral", "bert")


class Ex:
    def __init__(self, texts, label=0):
        self.texts, self.label = texts, label


EXAMPLES = [Ex(("the movie was good", "yes it is")), Ex(("bad", "no")), Ex(("the cat sat on the mat and the dog runs", "no"))]


@pytest.mark.parametrize("family", FAMS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_stack_matches_model_forward(model_dirs, family, attn):
    stack, tok = load_stack(str(model_dirs[family]), 2, attn_implementation=attn)
    stack.eval()
    enc = encode(tok, EXAMPLES, 32, model_inputs=stack.model_inputs)
    b = collate(enc, [0, 1, 2], regression=False)
    assert set(b.extra) == ({"token_type_ids"} if family == "bert" else set())
    with torch.no_grad():
        ours = stack.finish(stack.run_layers(*_prep(stack, b), 0, stack.num_layers))
        theirs = stack.base(input_ids=b.input_ids, attention_mask=b.attention_mask, **b.extra).last_hidden_state
    real = b.attention_mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=0, atol=1e-6)


def _prep(stack, b):
    inputs = stack.prepare(b.input_ids, b.attention_mask, **b.extra)
    return inputs.hidden, inputs


@pytest.mark.parametrize("family", FAMS)
def test_pooling_uses_last_real_token_even_when_pad_is_eos(model_dirs, family):
    stack, tok = load_stack(str(model_dirs[family]), 2)
    stack.eval()
    enc = encode(tok, EXAMPLES, 32)
    with torch.no_grad():
        batch = stack(*_ids(enc, [0, 1, 2]))
        alone = torch.cat([stack(*_ids(enc, [i])) for i in range(3)])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5)
    assert tok.pad_token is not None and tok.padding_side == "right"


def _ids(enc, idx):
    b = collate(enc, idx, regression=False)
    return b.input_ids, b.attention_mask


def test_model_without_layer_list_is_refused():
    from transformers import AutoModel

    base = AutoModel.from_config(make_config("llama", layers=2))
    base.layers = torch.nn.ModuleList()  # no list of num_hidden_layers blocks left
    with pytest.raises(OlftError, match="Could not find the layer list"):
        find_layers(base)


def test_every_family_is_discovered(model_dirs):
    for family in FAMS:
        stack, _ = load_stack(str(model_dirs[family]), 2)
        assert stack.family.name == family
        layer = stack.layers[0]
        for path in (stack.family.attn, stack.family.attn_out, stack.family.mlp_out):
            layer.get_submodule(path)


def test_layer_checks(model_dirs):
    stack, _ = load_stack(str(model_dirs["llama"]), 2)
    assert stack.check_layers([0]) == [0]  # index 0 is a layer
    for bad in ([4], [-1], [0, 9]):
        with pytest.raises(OlftError, match="out of range"):
            stack.check_layers(bad)


@pytest.mark.parametrize(
    "n, bucket",
    [(6, [2, 3]), (12, [4, 5, 6, 7]), (24, list(range(8, 16))), (30, list(range(10, 20))), (36, list(range(12, 24))), (32, list(range(10, 22))), (2, [0, 1])],
)
def test_middle_bucket(n, bucket):
    assert middle_bucket(n) == bucket


@pytest.mark.parametrize(
    "spec, expected",
    [("middle", [4, 5, 6, 7]), ("all", list(range(12))), ("3-5", [3, 4, 5]), ("0,2,11", [0, 2, 11]), ("0", [0]),
     ("4 - 6", [4, 5, 6]), ("9,2-4", [2, 3, 4, 9]), ("2-3,3", [2, 3])],
)
def test_parse_candidates(spec, expected):
    assert parse_candidates(spec, 12) == expected


@pytest.mark.parametrize("spec, phrase", [
    ("12", "Layer 12 in '--candidates 12' is out of range"), ("-1", "Layer -1 in '--candidates -1'"),
    ("5-3", "The range 5-3 in '--candidates 5-3' is empty"), ("x", "Cannot read '--candidates x'"),
    ("3-12", "Layer 12 in '--candidates 3-12'"), ("3--1", "Cannot read '--candidates 3--1'"),
    ("2-4,X", "Cannot read '--candidates 2-4,X'"), ("", "Cannot read '--candidates '"),
    ("3,,4", "'--candidates 3,,4' has an empty entry"), ("3,", "'--candidates 3,' has an empty entry"),
])
def test_parse_candidates_rejects(spec, phrase):
    with pytest.raises(OlftError, match=re.escape(phrase)):
        parse_candidates(spec, 12)


def test_parse_strategies():
    s = parse_strategies("olft,final,full,layers=0+3", 4)
    assert [x.name for x in s] == ["olft", "final", "full", "layers=0+3"]
    assert s[1].layers == (3,) and s[2].layers == (0, 1, 2, 3) and s[3].layers == (0, 3)
    assert parse_strategies("layers=1-3", 4) == [Strategy("layers=1+2+3", (1, 2, 3))]  # a range, as --candidates
    for bad in ("nope", "layers=4", "layers=x", "", "layers=2-4"):
        with pytest.raises(OlftError):
            parse_strategies(bad, 4)


@pytest.mark.parametrize("text, option, layers", [
    ("3", "layers=", (3,)), ("5+3", "layers=", (3, 5)), ("5 3", "layers=", (3, 5)), ("0", "--layers", (0,)),
    ("3,5", "--layers", (3, 5)), (" 5, 3 ", "--layers", (3, 5)), ("-1", "--layers", (-1,)),  # the range is parse_strategies'
    # Ranges low-high, as --candidates takes them (one reader, `read_layers`).
    ("1-3", "--layers", (1, 2, 3)), ("7,1-2", "--layers", (1, 2, 7)), ("0 - 2", "--layers", (0, 1, 2)), ("4-4", "layers=", (4,)),
    ("2-3+0", "layers=", (0, 2, 3)),
    # --layers also takes '+', as the strategy it runs (layers=3+5) and table.md write it; it was refused.
    ("3+5", "--layers", (3, 5)), ("5 + 1-2", "--layers", (1, 2, 5)), ("1,3+5", "--layers", (1, 3, 5)),
])
def test_parse_layers(text, option, layers):
    assert parse_layers(text, option) == layers


@pytest.mark.parametrize("text, option, message", [
    ("2+2", "layers=", "Layer 2 appears twice in 'layers=2+2': give each layer once, e.g. layers=2."),
    ("2,2", "--layers", "Layer 2 appears twice in '--layers 2,2': give each layer once, e.g. --layers 2."),
    ("5,1,05", "--layers", "Layer 5 appears twice in '--layers 5,1,05': give each layer once, e.g. --layers 1,5."),
    ("x", "layers=", "Cannot read 'layers=x': write layer numbers joined by '+', e.g. layers=3 or layers=3+5"),
    ("", "layers=", "Cannot read 'layers='"), ("3,5", "layers=", "Cannot read 'layers=3,5'"),
    ("3++5", "--layers", "'--layers 3++5' has an empty entry"), ("3+3", "--layers", "Layer 3 appears twice in '--layers 3+3'"),
    ("1.5", "--layers", "Cannot read '--layers 1.5'"), ("²", "--layers", "Cannot read '--layers ²'"),
    ("5-3", "--layers", "The range 5-3 in '--layers 5-3' is empty: write it low-high, e.g. 3-5."),
    ("1-3,2", "--layers", "Layer 2 appears twice in '--layers 1-3,2': give each layer once, e.g. --layers 1,2,3."),
    ("1-x", "--layers", "Cannot read '--layers 1-x'"), ("-1-3", "--layers", "Cannot read '--layers -1-3'"),
    ("3,,4", "--layers", "'--layers 3,,4' has an empty entry (',,' in a row)"),
    ("3+", "layers=", "'layers=3+' has an empty entry"), ("+3", "layers=", "'layers=+3' has an empty entry"),
])
def test_parse_layers_refuses(text, option, message):
    with pytest.raises(OlftError) as err:
        parse_layers(text, option)
    assert str(err.value).startswith(message), err.value


def test_a_layer_given_twice_is_refused_by_parse_strategies_as_by_parse_layers():
    with pytest.raises(OlftError) as err:
        parse_strategies("olft,layers=4+1+4", 8)
    assert str(err.value) == "Layer 4 appears twice in 'layers=4+1+4': give each layer once, e.g. layers=1+4."


def test_stack_from_config_without_loading():
    from transformers import AutoModel

    base = AutoModel.from_config(make_config("gpt2", layers=2))
    stack = Stack(base, None, 3)
    assert stack.num_layers == 2 and stack.head.out_features == 3


@pytest.mark.parametrize("text, message", [
    # was: "e.g. --layers 1,3", which reads as a list of strategies; the example keeps the '+' typed
    ("1+3,1+3", "Layer 1 appears twice in '--layers 1+3,1+3': give each layer once, e.g. --layers 1+3 (',' and '+' both join"),
    ("1+3+1", "Layer 1 appears twice in '--layers 1+3+1': give each layer once, e.g. --layers 1+3."),
    # was: "two ',' in a row" for a '+' at an end
    ("+1", "'--layers +1' has an empty entry (a '+' at the start): list layers joined by one '+', e.g. 3+5."),
    ("1+", "'--layers 1+' has an empty entry (a '+' at the end)"),
    ("3,,4", "'--layers 3,,4' has an empty entry (',,' in a row)"),
    # was: "two ',' in a row" for ',+'
    ("3,+4", "'--layers 3,+4' has an empty entry (',+' in a row): list layers joined by one '+', e.g. 3+5."),
    ("3 ,  ,4", "'--layers 3 ,  ,4' has an empty entry (',,' in a row)"),
])
def test_layers_messages_name_the_separator_typed(text, message):
    with pytest.raises(OlftError) as err:
        parse_layers(text, "--layers")
    assert str(err.value).startswith(message), err.value
