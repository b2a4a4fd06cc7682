"""nanolens.steering: find directions, combine them, add them while the model runs, measure.

    from nanolens.steering import mean_difference, steer, Steering, sweep
    happy = mean_difference(model, positive_texts, negative_texts, layer=2)
    with steer(model, happy, coeff=0.5, relative=True, positions="all") as s:
        print(model.generate(prompt, max_new_tokens=80))
    print(s.report())

Names are imported on first use, so `import nanolens.steering` stays light.
"""

from __future__ import annotations

from nanolens._lazy import lazy_exports

_EXPORTS = {
    "SteeringVector": "vector", "SteeringError": "vector", "model_fingerprint": "vector",
    "measure_scales": "vector", "weights_hash": "vector",
    "contrast_pair": "directions", "mean_difference": "directions", "pca_direction": "directions",
    "probe_direction": "directions", "random_direction": "directions", "sentiment_pairs": "directions", "gender_pairs": "directions",
    "hook_name": "directions",
    "Steering": "apply", "RowSteering": "apply", "SteeringReport": "apply", "steer": "apply",
    "POSITION_MODES": "apply",
    "top_tokens": "inspect", "format_top_tokens": "inspect", "cosine_table": "inspect",
    "direction_logits": "inspect", "direction_across_checkpoints": "inspect",
    "sweep": "evaluate", "SCORERS": "evaluate", "get_scorer": "evaluate", "words_scorer": "evaluate",
    "vader_scorer": "evaluate", "plot_sentiment_vs_coeff": "evaluate", "plot_layer_heatmap": "evaluate",
    "summarize_sweep": "evaluate", "continuation_perplexity": "evaluate", "val_loss_rise": "evaluate",
    "grid_settings": "evaluate", "evaluate_settings": "evaluate",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
