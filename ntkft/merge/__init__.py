"""Model merging with task vectors (task arithmetic, negation, TIES), nonlinear or tangent.

``vectors``: the pure algebra of task vectors τ = φ_T − φ0 (shared leaves; heads stay per task).
``runs``: finished runs as arrays (from a workdir or a run file), the shared-θ0 check, merged
models and their evaluation, held-out validation examples, PEFT export.
``run_file``: a finished run in one compact .npz (θ_T and θ0 of its trainable leaves, config,
summary, digests of the frozen weights), enough to merge it without its checkpoint.
``outputs``: merged outputs over many coefficients (forwards, or sums of stored tangents).
``selection``: α on validation (normalized metric; negation's control threshold).
``disentanglement``: the weight disentanglement error ξ(α1, α2) of a pair.
``localization``: energy of one task's θ0 kernel in another's top eigenspace.
``cli``: ``python -m ntkft.merge --runs=W1,W2 --alpha=0.4 --method=sum|ties --out=DIR [--export]``
(W: a workdir or a run file).
"""
from ntkft.merge.disentanglement import disagreement, disentanglement_error, mean_off_origin
from ntkft.merge.localization import energies, shared_jacobian, top_eigenspace
from ntkft.merge.outputs import MergedOutputs, direction, primary_metric, tangent_outputs
from ntkft.merge.runs import (
                              Run,
                              check_mergeable,
                              check_same_theta0,
                              dev_set,
                              evaluate,
                              export_peft,
                              load_run,
                              load_runs,
                              merged_trainable,
                              outputs,
                              outputs_on,
                              run_task_vector,
                              save_run,
                              training_indices,
                              validation_set,
)
from ntkft.merge.selection import best_alpha, negation_alpha, normalized
from ntkft.merge.vectors import (
                                 apply_vector,
                                 is_head,
                                 negate,
                                 scale,
                                 split_head,
                                 task_vector,
                                 ties_merge,
                                 weighted_sum,
)
