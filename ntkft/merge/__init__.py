"""Model merging with task vectors (task arithmetic, negation, TIES), nonlinear or tangent.

``vectors``: the pure algebra of task vectors τ = φ_T − φ0 (shared leaves; heads stay per task).
``runs``: finished runs as arrays, the shared-θ0 check, merged models and their evaluation.
``cli``: ``python -m ntkft.merge --runs=W1,W2 --alpha=0.4 --method=sum|ties --out=DIR``.
"""
from ntkft.merge.runs import (
                              Run,
                              check_mergeable,
                              check_same_theta0,
                              dev_set,
                              evaluate,
                              load_run,
                              load_runs,
                              merged_trainable,
                              outputs,
                              run_task_vector,
)
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
