"""Classifiers as pure functions ``apply_fn(params, batch, rng=None)``.

Families: BERT/RoBERTa encoders (``bert``), GPT-2 and LLaMA layout decoders
(``gpt2``, ``llama``; shared pieces in ``causal``).
"""
from ntkft.models.bert import PROJECTIONS, EncoderConfig, HeadConfig, SequenceClassifier
from ntkft.models.causal import DecoderConfig
from ntkft.models.functional import Model, as_functions, flatten, init_model, unflatten
from ntkft.models.layers import AdapterSpec
from ntkft.models.pretrained import (
                                     CheckpointMismatchError,
                                     load_pretrained,
                                     read_config,
                                     resolve_model_dir,
)
