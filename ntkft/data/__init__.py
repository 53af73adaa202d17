"""Data pipeline: tasks, file readers, tokenization, length-bucketed batches.

Typical use::

  from ntkft import data
  examples = data.load_examples("sst2", "train", "/path/to/data/glue")
  tokenizer = data.load_tokenizer(model_dir)
  encoded = data.encode(tokenizer, examples, max_len=128)
  stream = data.TrainStream(encoded, batch_size=32, buckets=(32, 64, 128),
                            max_len=128, seed=0)
  batch = stream.batch(step)  # dict of numpy arrays, see ntkft.data.batching

The same tasks from TensorFlow Datasets instead of files (optional dependency
tensorflow-datasets, imported on call)::

  examples = data.load_examples_tfds("sst2", "train")
"""

from ntkft.data.batching import (
    BATCH_KEYS,
    TrainStream,
    batch_at_step,
    bucket_lengths,
    epoch_plan,
    eval_batches,
    make_batch,
    padding_fraction,
    steps_per_epoch,
    train_batches,
)
from ntkft.data.fixed_sample import FixedSample, fixed_sample, one_padded_batch
from ntkft.data.readers import (
    DataFormatError,
    Examples,
    default_data_root,
    kshot_dir,
    load_examples,
    resolve_path,
    task_data_dir,
)
from ntkft.data.subset import subsample
from ntkft.data.tasks import TASKS, TaskSpec, get_task
from ntkft.data.tfds_source import load_examples_tfds
from ntkft.data.tokenization import Encoded, Tokenizer, encode, load_tokenizer
