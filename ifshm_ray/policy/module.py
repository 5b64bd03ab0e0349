"""Hierarchical (and flat baseline) masked PPO RLModules for RLlib's new API stack.

Hierarchical policy (:class:`HierarchicalRecoveryModule`)::

    h        = encoder(obs)                                   shared MLP over the semantic/telemetry features
    pi_h     = softmax(mask_c(category_head(h)))              pi_h(category | s)
    e_c      = embedding(category)                            the sampled (exploration) or stored (train) category
    pi_t     = softmax(mask_t[c](target_head([h, e_c])))      pi_l(target | s, c)
    pi_r     = softmax(mask_r[c](ratio_head([h, e_c])))       pi_l(ratio  | s, c)
    V(s)     = value_net(obs)                                 separate MLP unless ``vf_share_encoder``

Masks come from the observation: ``action_mask[c*T + t]`` says if (c, t) is valid, a category is valid iff any
of its targets is, and ``ratio_mask[c*R + r]`` says which ratio levels c may use (categories without a ratio allow
level 0 only, so their ratio term is log 1 = 0 and its entropy is 0). Masked logits are set to ``MASK_LOGIT``.
With ``model_config["act_trigger"]`` (``policy.act_on: alert``) the policy is alert-triggered: while the observation
shows no incident (no incident-opening alert pending or firing, every SLO green) ``observe`` is its only action, in
training, evaluation and Serve alike (:mod:`ifshm_ray.policy.trigger`).

Log-probabilities: ``log p(a) = log p(c) + log p(t|c) + log p(r|c)`` (exact). ``_forward_train`` recomputes the
target/ratio logits conditioned on the *stored* category ``batch[ACTIONS][0]``, so PPO's ratio uses the same
conditional that generated the action.

Entropy, two levels (what the learner's ``entropy_coeff_high`` / ``entropy_coeff_low`` multiply):

* ``ENTROPY_HIGH = H(pi_h)``, exact;
* ``ENTROPY_LOW = E_{c ~ pi_h}[H(t|s,c) + H(r|s,c)]``, the *exact expectation* over categories (the low-level
  heads are run for all C categories in ``_forward_train``; cheap because the heads are small). With
  ``model_config["low_entropy"] = "sampled"`` it is instead ``H(t|s,c_stored) + H(r|s,c_stored)``, a sample of
  the same expectation. Their sum is the joint entropy ``H(c, t, r)`` by the chain rule.

RLlib's own ``ACTION_DIST_INPUTS`` holds ``[c logits | t logits given c | r logits given c]``; the default
``TorchMultiDistribution.entropy()`` of that (logged as PPO's ``entropy``) is the sampled variant.

Flat policy (:class:`FlatRecoveryModule`): one masked categorical over all ``C*T*R`` combinations
(``joint_mask[c,t,r] = action_mask[c,t] * ratio_mask[c,r]``); samples are mapped back to ``(c, t, r)``. Its
``ENTROPY_HIGH`` is the entropy of the category marginal and ``ENTROPY_LOW = H(joint) - H(category)``, exact.

``model_config`` keys (all optional): ``encoder_hiddens`` [256, 256], ``head_hiddens`` [128],
``vf_hiddens`` [256, 256], ``activation`` "tanh" | "relu", ``category_embed_dim`` 16,
``vf_share_encoder`` False, ``low_entropy`` "expected" | "sampled", ``semantic_table`` None (path of a
``semantic_items.npz``: adds the LLM semantic state, see :class:`SemanticStateBlock`), ``semantic_shape`` (filled by
the training job: ``[items, hidden, dropped columns, state_dim]``, lets a saved module rebuild without the file),
``semantic_init_from_encoder`` True, ``semantic_keep_counts`` False (True: the semantic state joins the raw
template counts instead of replacing them).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Sequence

from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override
from ray.rllib.utils.framework import try_import_torch

from ifshm_ray.policy.distributions import (
    MASK_LOGIT,
    categorical_entropy,
    flat_dist_cls,
    flat_to_tuple,
    hierarchical_dist_cls,
    tuple_to_flat,
)
from ifshm_ray.policy.spaces import ACTION_MASK_KEY, OBS_KEY, RATIO_MASK_KEY, SpaceDims, space_dims

torch, nn = try_import_torch()

#: Extra forward-train outputs read by :class:`ifshm_ray.policy.learner.IFSHMPPOTorchLearner`.
ENTROPY_HIGH = "entropy_high"
ENTROPY_LOW = "entropy_low"

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "encoder_hiddens": [256, 256],
    "head_hiddens": [128],
    "vf_hiddens": [256, 256],
    "activation": "tanh",
    "category_embed_dim": 16,
    "vf_share_encoder": False,
    "low_entropy": "expected",
    "semantic_table": None,
    "semantic_shape": None,
    "semantic_init_from_encoder": True,
    "semantic_keep_counts": False,
    "act_trigger": None,
    "entity_layout": None,
}


def _mlp(in_dim: int, hiddens: Sequence[int], out_dim: int | None, activation: str) -> "nn.Sequential":
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}.get(activation)
    if act is None:
        raise ValueError(f"model_config['activation'] must be 'tanh' or 'relu'; got {activation!r}.")
    layers: list = []
    dim = in_dim
    for h in hiddens:
        layers += [nn.Linear(dim, int(h)), act()]
        dim = int(h)
    if out_dim is not None:
        layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


def _masked(logits: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    return torch.where(mask, logits, torch.full_like(logits, MASK_LOGIT))


class SemanticStateBlock(nn.Module):
    """LLM semantic state from the observation's template counts and alarm flags (IFSHM's s_t inside PPO).

    Holds a frozen table of LM embeddings, one per log template / alarm text (built once by
    :func:`ifshm_ray.encoding.rl_state.build_table`), and computes per window a learned, count-weighted attention
    pooling over the items present (``softmax(q . tanh(K e_i) / sqrt(d) + w * log(1 + count_i))``, as the encoder's
    template path does), projected to ``state_dim`` and layer-normalised, next to a count-weighted sum of projected
    embeddings (``sum_i log(1 + count_i) P e_i``, layer-normalised): softmax pooling keeps the most salient item,
    the sum keeps every item (a window holds ~13, most of them benign). Both projections start from the fine-tuned
    encoder's weights and are trained by PPO; being shared by all items, they place a template never seen in
    training near the known templates the LM finds similar. By default the output replaces the raw template-count
    columns (the policy reads logs only through the language model, metrics / alarm flags / action history as
    numbers); with ``keep_counts`` it joins them.
    """

    def __init__(self, obs_dim: int, shape: Sequence[int], table: dict | None = None, init_from_encoder: bool = True,
                 keep_counts: bool = False):
        super().__init__()
        n, hidden, n_drop, d = (int(x) for x in shape)
        self.keep_counts = bool(keep_counts)
        n_drop = 0 if self.keep_counts else n_drop
        self.state_dim = d
        self.register_buffer("embeddings", torch.zeros(n, hidden))
        self.register_buffer("count_index", torch.zeros(n, dtype=torch.long))
        self.register_buffer("count_is_log1p", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("keep_index", torch.arange(obs_dim - n_drop, dtype=torch.long))
        self.key = nn.Linear(hidden, d)
        self.query = nn.Parameter(torch.randn(d) / d ** 0.5)
        self.count_weight = nn.Parameter(torch.ones(1))
        self.proj = nn.Linear(hidden, d)
        self.norm = nn.LayerNorm(d)
        self.bag_proj = nn.Linear(hidden, d)
        self.bag_norm = nn.LayerNorm(d)
        self.counting = False
        self.windows = 0
        """Windows encoded while acting (``_forward_inference`` / ``_forward_exploration``), and the item-embedding lookups they made: with the LM run
        once per distinct text, the cache hit rate in the loop is ``1 - lm_passes / lookups``."""
        self.lookups = 0
        if table is not None:
            self.load_table(table, obs_dim, init_from_encoder)

    @torch.no_grad()
    def load_table(self, table: dict, obs_dim: int, init_from_encoder: bool) -> None:
        t = lambda k, dt=torch.float32: torch.as_tensor(table[k], dtype=dt)  # noqa: E731
        self.embeddings.copy_(t("embeddings"))
        self.count_index.copy_(t("count_index", torch.long))
        self.count_is_log1p.copy_(t("count_is_log1p", torch.bool))
        keep = torch.ones(obs_dim, dtype=torch.bool)
        if not self.keep_counts:
            keep[t("drop_index", torch.long)] = False
        self.keep_index.copy_(torch.nonzero(keep).squeeze(-1))
        if init_from_encoder and tuple(table["text_proj_w"].shape) == tuple(self.proj.weight.shape):
            self.key.weight.copy_(t("attn_key_w"))
            self.key.bias.copy_(t("attn_key_b"))
            self.query.copy_(t("attn_query"))
            self.count_weight.copy_(t("count_weight").reshape(1))
            for proj in (self.proj, self.bag_proj):
                proj.weight.copy_(t("text_proj_w"))
                proj.bias.copy_(t("text_proj_b"))

    @property
    def out_dim(self) -> int:
        return int(self.keep_index.numel()) + 2 * self.state_dim

    def semantic_state(self, x: "torch.Tensor") -> "torch.Tensor":
        raw = x[:, self.count_index]
        lc = torch.where(self.count_is_log1p, raw, torch.log1p(raw.clamp_min(0.0)))  # log(1 + count) per item
        present = lc > 0
        if self.counting:  # acting (env runners, serving): count the item-embedding lookups
            self.windows += int(x.shape[0])
            self.lookups += int(present.sum())
        keys = torch.tanh(self.key(self.embeddings))                                   # [N, d]
        score = keys @ self.query / keys.shape[1] ** 0.5                               # [N]
        logits = (score + self.count_weight * lc).masked_fill(~present, -1e9)
        w = torch.softmax(logits, dim=-1) * present                                   # [B, N], 0 when none present
        attended = self.norm(w @ self.proj(self.embeddings))                          # = proj(sum_i w_i e_i)
        bag = self.bag_norm(lc @ self.bag_proj(self.embeddings))                      # sum_i log(1 + c_i) P e_i
        return torch.cat([attended, bag], dim=-1)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return torch.cat([x[:, self.keep_index], self.semantic_state(x)], dim=-1)


class EntityTargetHead(nn.Module):
    """Target logits scored per target with shared weights (``policy.target_head: entity``): logit(t | s, c) =
    w . act(W_x x_t + W_h h + W_e e_c + b), where x_t is target t's own features (its block of the observation and the
    incident memory's record of actions on it) and h the shared encoding of the whole observation. One set of weights
    scores every target, so what is learned about a node showing a fault transfers to every other node (a pointer over
    entities, as in Vinyals et al. 2015's pointer networks and AlphaStar's target selection), where the plain head
    must learn a separate output per node from the flat observation. Computed as a sum of three projections so the
    (B, C, T, D) tensor of every category is built without concatenating inputs."""

    def __init__(self, ent_dim: int, enc_dim: int, emb_dim: int, hidden: int, activation: str) -> None:
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
        self.wx = nn.Linear(ent_dim, hidden)
        self.wh = nn.Linear(enc_dim, hidden, bias=False)
        self.we = nn.Linear(emb_dim, hidden, bias=False)
        self.out = nn.Sequential(act(), nn.Linear(hidden, 1))

    def forward(self, ent: "torch.Tensor", h: "torch.Tensor", e: "torch.Tensor") -> "torch.Tensor":
        """``ent`` (B, T, F), ``h`` (B, H), ``e`` (B, E) -> (B, T); or ``e`` (B, C, E) -> (B, C, T)."""
        a, g = self.wx(ent), self.wh(h)
        if e.dim() == 2:
            return self.out(a + (g + self.we(e))[:, None, :]).squeeze(-1)
        return self.out(a[:, None] + (g[:, None, :] + self.we(e))[:, :, None, :]).squeeze(-1)


class _MaskedRecoveryModuleBase(TorchRLModule, ValueFunctionAPI):
    """Shared parts: config, spaces, masks, encoder, value function."""

    dims: SpaceDims

    def _cfg(self) -> dict[str, Any]:
        cfg = dict(DEFAULT_MODEL_CONFIG)
        user = self.model_config or {}
        if not isinstance(user, dict):  # a DefaultModelConfig dataclass
            user = {k: v for k, v in vars(user).items() if k in DEFAULT_MODEL_CONFIG}
        # RLlib merges its DefaultModelConfig keys (e.g. PPO's ``vf_share_layers``) into model_config: ignore them.
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

        rllib_keys = {f.name for f in dataclasses.fields(DefaultModelConfig)}
        unknown = set(user) - set(DEFAULT_MODEL_CONFIG) - rllib_keys
        if unknown:
            raise ValueError(
                f"Unknown model_config keys {sorted(unknown)} for {type(self).__name__}; "
                f"allowed: {sorted(DEFAULT_MODEL_CONFIG)}."
            )
        cfg.update({k: v for k, v in user.items() if k in DEFAULT_MODEL_CONFIG})
        if cfg["low_entropy"] not in ("expected", "sampled"):
            raise ValueError(f"model_config['low_entropy'] must be 'expected' or 'sampled'; got {cfg['low_entropy']!r}.")
        return cfg

    def _setup_common(self) -> dict[str, Any]:
        self.dims = space_dims(self.observation_space, self.action_space)
        cfg = self._cfg()
        self._low_entropy_mode = cfg["low_entropy"]
        self._vf_share_encoder = bool(cfg["vf_share_encoder"])
        self._semantic = self._semantic_block(cfg)
        self._trigger = self._trigger_spec(cfg["act_trigger"])
        in_dim = self._semantic.out_dim if self._semantic is not None else self.dims.num_features
        self._encoder = _mlp(in_dim, cfg["encoder_hiddens"], None, cfg["activation"])
        self._enc_dim = int(cfg["encoder_hiddens"][-1]) if cfg["encoder_hiddens"] else in_dim
        if self._vf_share_encoder:
            self._value_net = nn.Linear(self._enc_dim, 1)
        else:
            self._value_net = _mlp(in_dim, cfg["vf_hiddens"], 1, cfg["activation"])
        return cfg

    def _semantic_block(self, cfg: dict) -> "SemanticStateBlock | None":
        path, shape = cfg["semantic_table"], cfg["semantic_shape"]
        if not path and not shape:
            return None
        table = None
        if path:
            from pathlib import Path

            from ifshm_ray.encoding.rl_state import load_table

            if Path(path).expanduser().exists() or not shape:
                table = load_table(path, obs_dim=self.dims.num_features)
                n, h = table["embeddings"].shape
                shape = [n, h, len(table["drop_index"]), table["text_proj_w"].shape[0]]
        # without the file (a saved module moved elsewhere), the shape rebuilds it and the state dict fills it
        return SemanticStateBlock(self.dims.num_features, shape, table, bool(cfg["semantic_init_from_encoder"]),
                                  keep_counts=bool(cfg["semantic_keep_counts"]))

    def _trigger_spec(self, spec: dict | None) -> tuple | None:
        """``act_trigger`` (:func:`ifshm_ray.policy.trigger.trigger_spec`): the observation indices of the incident-
        opening alert flags and of the SLO-green feature, and the ``observe`` category; None: act in any state."""
        if not spec:
            return None
        n, c = self.dims.num_features, self.dims.num_categories
        flags, slo, observe = list(spec["flags"]), int(spec["slo_green"]), int(spec["observe"])
        if not flags or not all(0 <= int(i) < n for i in flags + [slo]) or not 0 <= observe < c:
            raise ValueError(f"model_config['act_trigger'] {spec!r} does not fit the observation ({n} features) and "
                             f"{c} categories; it is built by ifshm_ray.policy.trigger.trigger_spec(env_config)")
        acting = torch.ones(c, dtype=torch.bool)
        acting[observe] = False
        return torch.as_tensor([int(i) for i in flags]), slo, acting

    def incident_open(self, obs: Dict[str, "torch.Tensor"]) -> "torch.Tensor":
        """(B,) bool: the telemetry shows an incident (an incident-opening alert pending or firing, or an SLO
        broken): the states where an ``act_trigger`` policy may act. All True without a trigger."""
        x = obs[OBS_KEY]
        if self._trigger is None:
            return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        flags, slo, _ = self._trigger
        return (x[:, flags.to(x.device)] > 0.5).any(-1) | (x[:, slo] < 0.5)

    def _acting(self, batch: Dict[str, Any], deterministic: bool) -> Dict[str, Any]:
        """Forward for acting; counts the semantic item lookups (training forwards do not)."""
        if self._semantic is None:
            return self._act(batch[Columns.OBS], deterministic=deterministic)
        self._semantic.counting = True
        try:
            return self._act(batch[Columns.OBS], deterministic=deterministic)
        finally:
            self._semantic.counting = False

    def _inputs(self, obs: Dict[str, "torch.Tensor"]) -> "torch.Tensor":
        """The features the MLPs read: the numeric observation, with the LLM semantic state when configured."""
        x = obs[OBS_KEY]
        return self._semantic(x) if self._semantic is not None else x

    # --- masks ---------------------------------------------------------------------------------------------
    def masks(self, obs: Dict[str, "torch.Tensor"]) -> tuple:
        """``(category_mask (B, C), pair_mask (B, C, T), ratio_mask (B, C, R))`` as bool tensors."""
        d = self.dims
        pair = obs[ACTION_MASK_KEY].reshape(-1, d.num_categories, d.num_targets) > 0.5
        ratio = obs[RATIO_MASK_KEY].reshape(-1, d.num_categories, d.num_ratios) > 0.5
        # A category that allows no ratio level at all falls back to level 0 (contract: level 0 always allowed).
        no_ratio = ~ratio.any(-1, keepdim=True)
        level0 = torch.zeros_like(ratio)
        level0[..., 0] = True
        ratio = ratio | (no_ratio & level0)
        if self._trigger is not None:  # no incident in the telemetry: observe is the only action
            calm = ~self.incident_open(obs)
            pair = pair & ~(calm[:, None, None] & self._trigger[2].to(pair.device)[None, :, None])
        return pair.any(-1), pair, ratio

    # --- value function ------------------------------------------------------------------------------------
    @override(ValueFunctionAPI)
    def compute_values(self, batch: Dict[str, Any], embeddings: Any = None) -> "torch.Tensor":
        if self._vf_share_encoder:
            h = embeddings if embeddings is not None else self._encoder(self._inputs(batch[Columns.OBS]))
            return self._value_net(h).squeeze(-1)
        return self._value_net(self._inputs(batch[Columns.OBS])).squeeze(-1)

    # --- public helpers (serving, tests) -------------------------------------------------------------------
    def action_probabilities(self, obs: Dict[str, "torch.Tensor"]) -> "torch.Tensor":
        """Joint probabilities ``p(c, t, r | s)`` as a ``(B, C, T, R)`` tensor (masked entries are 0)."""
        raise NotImplementedError

    def category_probabilities(self, obs: Dict[str, "torch.Tensor"]) -> "torch.Tensor":
        """``p(c | s)`` as a ``(B, C)`` tensor."""
        return self.action_probabilities(obs).sum(dim=(-1, -2))


class HierarchicalRecoveryModule(_MaskedRecoveryModuleBase):
    """pi_h(category | s) then pi_l(target | s, c), pi_l(ratio | s, c), with masking. See module docstring."""

    @override(RLModule)
    def setup(self):
        super().setup()
        cfg = self._setup_common()
        d = self.dims
        act = cfg["activation"]
        self._category_head = _mlp(self._enc_dim, cfg["head_hiddens"], d.num_categories, act)
        self._category_embedding = nn.Embedding(d.num_categories, int(cfg["category_embed_dim"]))
        low_in = self._enc_dim + int(cfg["category_embed_dim"])
        self._target_head = _mlp(low_in, cfg["head_hiddens"], d.num_targets, act)
        self._ratio_head = _mlp(low_in, cfg["head_hiddens"], d.num_ratios, act)
        self._entity = self._entity_spec(cfg["entity_layout"])
        if self._entity is not None:  # the plain head's logits plus a per-target score
            hidden = int(cfg["head_hiddens"][0]) if cfg["head_hiddens"] else 64
            self._entity_head = EntityTargetHead(self._entity["ent_dim"], self._enc_dim,
                                                 int(cfg["category_embed_dim"]), hidden, act)

    def _entity_spec(self, layout: dict | None) -> dict | None:
        """``entity_layout`` (:func:`ifshm_ray.policy.trigger.entity_layout`) checked against the spaces: where each
        target's features are (a block of ``target_feat`` per target from index 0, target-major) and where the incident
        memory's target one-hots are (``memory_slots`` slots of ``memory_slot_feat`` from ``memory_offset``: category
        one-hot, target one-hot, steps ago)."""
        if not layout:
            return None
        d = self.dims
        f, mo, m, sf = (int(layout[k]) for k in ("target_feat", "memory_offset", "memory_slots", "memory_slot_feat"))
        if sf != d.num_categories + d.num_targets + 1 or mo + m * sf > d.num_features or d.num_targets * f > mo:
            raise ValueError(f"model_config['entity_layout'] {layout!r} does not fit the observation "
                             f"({d.num_features} features), {d.num_targets} targets and {d.num_categories} "
                             "categories; it is built by ifshm_ray.policy.trigger.entity_layout(env_config)")
        return {"target_feat": f, "memory_offset": mo, "memory_slots": m, "slot": sf, "ent_dim": f + m}

    def _entities(self, obs) -> "torch.Tensor":
        """(B, T, F + M): each target's observation block and, per incident-memory slot, whether that action was on
        it."""
        x, e, d = obs[OBS_KEY], self._entity, self.dims
        b, t = x.shape[0], d.num_targets
        blocks = x[:, : t * e["target_feat"]].reshape(b, t, e["target_feat"])
        mem = x[:, e["memory_offset"]: e["memory_offset"] + e["memory_slots"] * e["slot"]]
        on = mem.reshape(b, e["memory_slots"], e["slot"])[:, :, d.num_categories: d.num_categories + t]
        return torch.cat([blocks, on.transpose(1, 2)], dim=-1)

    # --- building blocks -----------------------------------------------------------------------------------
    def _high(self, obs):
        h = self._encoder(self._inputs(obs))
        cat_mask, pair_mask, ratio_mask = self.masks(obs)
        cat_logits = _masked(self._category_head(h), cat_mask)
        return h, cat_logits, pair_mask, ratio_mask

    def _low_given(self, h, category, pair_mask, ratio_mask, obs):
        """Masked target and ratio logits conditioned on ``category`` (B,)."""
        emb = self._category_embedding(category)
        x = torch.cat([h, emb], dim=-1)
        idx = torch.arange(category.shape[0], device=category.device)
        t_raw = self._target_head(x)
        if self._entity is not None:
            t_raw = t_raw + self._entity_head(self._entities(obs), h, emb)
        t_logits = _masked(t_raw, pair_mask[idx, category])
        r_logits = _masked(self._ratio_head(x), ratio_mask[idx, category])
        return t_logits, r_logits

    def _low_all(self, h, pair_mask, ratio_mask, obs):
        """Masked target (B, C, T) and ratio (B, C, R) logits for every category."""
        b, c = h.shape[0], self.dims.num_categories
        emb = self._category_embedding.weight.unsqueeze(0).expand(b, c, -1)
        x = torch.cat([h.unsqueeze(1).expand(b, c, h.shape[-1]), emb], dim=-1)
        t_raw = self._target_head(x)
        if self._entity is not None:
            t_raw = t_raw + self._entity_head(self._entities(obs), h, emb)
        return _masked(t_raw, pair_mask), _masked(self._ratio_head(x), ratio_mask)

    def _act(self, obs, deterministic: bool) -> Dict[str, Any]:
        h, cat_logits, pair_mask, ratio_mask = self._high(obs)
        if deterministic:
            c = cat_logits.argmax(-1)
        else:
            c = torch.distributions.Categorical(logits=cat_logits).sample()
        t_logits, r_logits = self._low_given(h, c, pair_mask, ratio_mask, obs)
        if deterministic:
            t, r = t_logits.argmax(-1), r_logits.argmax(-1)
        else:
            t = torch.distributions.Categorical(logits=t_logits).sample()
            r = torch.distributions.Categorical(logits=r_logits).sample()
        logp = (
            torch.log_softmax(cat_logits, -1).gather(-1, c[:, None]).squeeze(-1)
            + torch.log_softmax(t_logits, -1).gather(-1, t[:, None]).squeeze(-1)
            + torch.log_softmax(r_logits, -1).gather(-1, r[:, None]).squeeze(-1)
        )
        return {
            Columns.ACTIONS: (c, t, r),
            Columns.ACTION_LOGP: logp,
            Columns.ACTION_DIST_INPUTS: torch.cat([cat_logits, t_logits, r_logits], dim=-1),
        }

    # --- RLModule forward passes ---------------------------------------------------------------------------
    @override(TorchRLModule)
    def _forward_inference(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        return self._acting(batch, deterministic=True)

    @override(TorchRLModule)
    def _forward_exploration(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        return self._acting(batch, deterministic=False)

    @override(RLModule)
    def _forward_train(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        obs = batch[Columns.OBS]
        h, cat_logits, pair_mask, ratio_mask = self._high(obs)
        actions = batch[Columns.ACTIONS]
        c = (actions[..., 0] if isinstance(actions, torch.Tensor) else actions[0]).long()
        idx = torch.arange(c.shape[0], device=c.device)
        ent_high = categorical_entropy(cat_logits)
        if self._low_entropy_mode == "expected":
            t_all, r_all = self._low_all(h, pair_mask, ratio_mask, obs)
            t_logits, r_logits = t_all[idx, c], r_all[idx, c]
            p_c = torch.softmax(cat_logits, -1)
            ent_low = (p_c * (categorical_entropy(t_all) + categorical_entropy(r_all))).sum(-1)
        else:
            t_logits, r_logits = self._low_given(h, c, pair_mask, ratio_mask, obs)
            ent_low = categorical_entropy(t_logits) + categorical_entropy(r_logits)
        out = {
            Columns.ACTION_DIST_INPUTS: torch.cat([cat_logits, t_logits, r_logits], dim=-1),
            ENTROPY_HIGH: ent_high,
            ENTROPY_LOW: ent_low,
        }
        if self._vf_share_encoder:
            out[Columns.EMBEDDINGS] = h
        return out

    # --- distributions -------------------------------------------------------------------------------------
    def _dist_cls(self):
        d = self.dims
        return hierarchical_dist_cls(d.num_categories, d.num_targets, d.num_ratios)

    @override(TorchRLModule)
    def get_inference_action_dist_cls(self):
        return self._dist_cls()

    @override(TorchRLModule)
    def get_exploration_action_dist_cls(self):
        return self._dist_cls()

    @override(TorchRLModule)
    def get_train_action_dist_cls(self):
        return self._dist_cls()

    # --- public helpers ------------------------------------------------------------------------------------
    def action_probabilities(self, obs: Dict[str, "torch.Tensor"]) -> "torch.Tensor":
        h, cat_logits, pair_mask, ratio_mask = self._high(obs)
        t_all, r_all = self._low_all(h, pair_mask, ratio_mask, obs)
        p_c = torch.softmax(cat_logits, -1)
        p_t = torch.softmax(t_all, -1)
        p_r = torch.softmax(r_all, -1)
        return p_c[:, :, None, None] * p_t[:, :, :, None] * p_r[:, :, None, :]

    def low_level_logits(self, obs: Dict[str, "torch.Tensor"], category: "torch.Tensor") -> tuple:
        """Masked ``(target_logits (B, T), ratio_logits (B, R))`` given a category (B,)."""
        h, _, pair_mask, ratio_mask = self._high(obs)
        return self._low_given(h, category.long(), pair_mask, ratio_mask, obs)


class FlatRecoveryModule(_MaskedRecoveryModuleBase):
    """Flat PPO baseline: one masked categorical over all (category, target, ratio) combinations."""

    @override(RLModule)
    def setup(self):
        super().setup()
        cfg = self._setup_common()
        self._pi_head = _mlp(self._enc_dim, cfg["head_hiddens"], self.dims.num_joint_actions, cfg["activation"])

    def _logits(self, obs):
        d = self.dims
        h = self._encoder(self._inputs(obs))
        _, pair_mask, ratio_mask = self.masks(obs)
        joint = (pair_mask[:, :, :, None] & ratio_mask[:, :, None, :]).reshape(-1, d.num_joint_actions)
        return h, _masked(self._pi_head(h), joint)

    def _act(self, obs, deterministic: bool) -> Dict[str, Any]:
        d = self.dims
        _, logits = self._logits(obs)
        idx = logits.argmax(-1) if deterministic else torch.distributions.Categorical(logits=logits).sample()
        logp = torch.log_softmax(logits, -1).gather(-1, idx[:, None]).squeeze(-1)
        return {
            Columns.ACTIONS: flat_to_tuple(idx, d.num_targets, d.num_ratios),
            Columns.ACTION_LOGP: logp,
            Columns.ACTION_DIST_INPUTS: logits,
        }

    @override(TorchRLModule)
    def _forward_inference(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        return self._acting(batch, deterministic=True)

    @override(TorchRLModule)
    def _forward_exploration(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        return self._acting(batch, deterministic=False)

    @override(RLModule)
    def _forward_train(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        d = self.dims
        h, logits = self._logits(batch[Columns.OBS])
        ent_joint = categorical_entropy(logits)
        cat_logits = torch.logsumexp(logits.reshape(-1, d.num_categories, d.num_targets * d.num_ratios), dim=-1)
        ent_high = categorical_entropy(cat_logits)
        out = {
            Columns.ACTION_DIST_INPUTS: logits,
            ENTROPY_HIGH: ent_high,
            ENTROPY_LOW: ent_joint - ent_high,
        }
        if self._vf_share_encoder:
            out[Columns.EMBEDDINGS] = h
        return out

    def _dist_cls(self):
        return flat_dist_cls(self.dims.num_targets, self.dims.num_ratios)

    @override(TorchRLModule)
    def get_inference_action_dist_cls(self):
        return self._dist_cls()

    @override(TorchRLModule)
    def get_exploration_action_dist_cls(self):
        return self._dist_cls()

    @override(TorchRLModule)
    def get_train_action_dist_cls(self):
        return self._dist_cls()

    def action_probabilities(self, obs: Dict[str, "torch.Tensor"]) -> "torch.Tensor":
        d = self.dims
        _, logits = self._logits(obs)
        return torch.softmax(logits, -1).reshape(-1, d.num_categories, d.num_targets, d.num_ratios)


#: ``policy.kind`` -> module class.
MODULE_CLASSES: dict[str, type[_MaskedRecoveryModuleBase]] = {
    "hierarchical": HierarchicalRecoveryModule,
    "flat": FlatRecoveryModule,
}


def module_class(kind: str) -> type[_MaskedRecoveryModuleBase]:
    """The RLModule class for ``policy.kind`` ("hierarchical" or "flat")."""
    try:
        return MODULE_CLASSES[kind]
    except KeyError:
        raise ValueError(f"policy.kind must be one of {sorted(MODULE_CLASSES)}; got {kind!r}.") from None
