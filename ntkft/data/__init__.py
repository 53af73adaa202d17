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

from ntkft.data.batching import BATCH_KEYS
from ntkft.data.batching import TrainStream
from ntkft.data.batching import batch_at_step
from ntkft.data.batching import bucket_lengths
from ntkft.data.batching import epoch_plan
from ntkft.data.batching import eval_batches
from ntkft.data.batching import make_batch
from ntkft.data.batching import padding_fraction
from ntkft.data.batching import steps_per_epoch
from ntkft.data.batching import train_batches
from ntkft.data.fixed_sample import FixedSample
from ntkft.data.fixed_sample import fixed_sample
from ntkft.data.fixed_sample import one_padded_batch
from ntkft.data.readers import DataFormatError
from ntkft.data.readers import Examples
from ntkft.data.readers import kshot_dir
from ntkft.data.readers import load_examples
from ntkft.data.readers import resolve_path
from ntkft.data.readers import default_data_root
from ntkft.data.readers import task_data_dir
from ntkft.data.subset import subsample
from ntkft.data.tasks import TASKS
from ntkft.data.tasks import TaskSpec
from ntkft.data.tasks import get_task
from ntkft.data.tfds_source import load_examples_tfds
from ntkft.data.tokenization import Encoded
from ntkft.data.tokenization import Tokenizer
from ntkft.data.tokenization import encode
from ntkft.data.tokenization import load_tokenizer
