"""Evaluation harness (episodes in parallel on Ray, MTTR metrics), the mean and spread over training seeds
(:mod:`~ifshm_ray.eval.aggregate`) and reports (Markdown + PNG)."""
