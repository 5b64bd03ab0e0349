"""ifshm-ray: intelligent fault self-healing for cloud AI platforms (IFSHM, arXiv 2506.07411) on Ray."""

__version__ = "0.1.0"
