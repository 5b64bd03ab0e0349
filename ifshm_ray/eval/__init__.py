"""Evaluation harness (episodes in parallel on Ray, MTTR metrics) and reports (Markdown + PNG)."""
