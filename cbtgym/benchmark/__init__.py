"""The cbtgym benchmark: prompt-only, SFT, DPO and RL therapists in one table, measured as the seed papers measure them.

* :mod:`.variants`: the therapists compared (prompt files, LoRA checkpoints) and the backend pool;
* :mod:`.judges`: the per-session metrics (act labels, AT recovery, satisfaction, safety, CTRS);
* :mod:`.protocols`: simulated sessions (LLM4CBT), courses (Tahir), crisis probes (Moore et al.),
  act-label match with human therapists (LLM4CBT Table 2);
* :mod:`.analysis`: bootstrap CIs, paired contrasts, the linear mixed-effects model;
* :mod:`.report`: report.md, results.csv, PNG plots, W&B;
* :mod:`.runner`: runs it all, resumably (``python train/benchmark.py``).
"""
