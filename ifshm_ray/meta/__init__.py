"""The meta-controller of continual adaptation (issue 15): novelty detection, online clustering of novel
incidents, a trust table per cluster, steering of replay and scenario weights, and the gate.

* :mod:`.config`      -- ``MetaConfig`` (pydantic, a docstring per field; no torch, no Ray)
* :mod:`.novelty`     -- calibrating the encoder's unknown score to a false-positive rate on known-fault windows
* :mod:`.controller`  -- ``OnlineClusterer``, ``TrustTable``, ``MetaController`` (gate, steering, state)
* :mod:`.prompt_tuning` -- ``tune_prompt``: peft soft-prompt tuning of the encoder (clustering loss + anchor)
* :mod:`.gate`        -- ``GatedPolicy``: the gate as a baselines ``Policy`` (evaluation, the protocol)
"""
