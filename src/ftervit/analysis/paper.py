"""The paper's numbers (SPEC section 4) that the analyses print beside their own."""
from __future__ import annotations

PAPER = {
    "importance": {
        "layernorm_param_share_below": 0.002,
        "layernorm_taylor_share": [0.34, 0.39],
        "patch_embed_param_share": [0.01, 0.03],
        "most_important_layer": "patch_embed.proj (DeiT-S)",
        "head_param_share": [0.02, 0.03],
        "head_importance_share_below": 0.013,
    },
    "weights": {"zero_fraction": 0.37},
    "fidelity": {"patch_embed_cosine": 0.88, "layernorm_beta_cosine": {"mean": 0.71, "std": 0.09}},
    "rollout": "teacher and student attend to the same regions",
}
