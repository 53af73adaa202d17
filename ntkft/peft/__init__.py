"""Parameter subsets: LoRA adapters, BitFit, whole layers, the head; the subset a kernel covers."""
from ntkft.peft.kernel_subset import KernelSubset, kernel_subset
from ntkft.peft.subsets import (
                                METHODS,
                                TARGETS,
                                PeftSpec,
                                adapters_for,
                                combine,
                                count,
                                describe,
                                merge_lora,
                                module_path,
                                partition,
                                resolve_layers,
                                targets_for,
                                trainable_names,
)
