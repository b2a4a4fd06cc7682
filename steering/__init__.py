"""nanolens.steering: find directions, combine them, add them while the model runs, measure.

    from nanolens.steering import mean_difference, steer, Steering, sweep
    happy = mean_difference(model, positive_texts, negative_texts, layer=2)
    with steer(model, happy, coeff=0.5, relative=True, positions="all") as s:
        print(model.generate(prompt, max_new_tokens=80))
    print(s.report())

Steering wraps the model: `steer` attaches hooks, `generate(steering=...)` takes a Steering;
the model itself never imports this package.
"""

from nanolens.corpora.pairs import gender_pairs, sentiment_pairs

from .apply import STEER_POSITIONS, RowSteering, Steering, SteeringReport, steer
from .directions import contrast_pair, hook_name, mean_difference, pca_direction, probe_direction, random_direction
from .fluency import continuation_perplexity, val_loss_rise
from .margins import best_margin_layers, margin_sweep
from .plots import plot_layer_heatmap, plot_sentiment_vs_coeff
from .readout import cosine_table, direction_across_checkpoints, direction_logits, format_top_tokens, top_tokens
from .scorers import SCORERS, get_scorer, vader_scorer, words_scorer
from .selection import best_layers, summarize_sweep
from .sweep import evaluate_settings, grid_settings, setting_name, sweep
from .fingerprint import model_fingerprint, weights_hash
from .vector import SteeringError, SteeringVector, measure_scales

__all__ = [
    "SCORERS", "STEER_POSITIONS", "RowSteering", "Steering", "SteeringError", "SteeringReport", "SteeringVector",
    "best_layers", "best_margin_layers", "continuation_perplexity", "contrast_pair", "cosine_table",
    "direction_across_checkpoints", "direction_logits", "evaluate_settings", "format_top_tokens", "gender_pairs",
    "get_scorer", "grid_settings", "hook_name", "margin_sweep", "mean_difference", "measure_scales", "model_fingerprint",
    "pca_direction", "plot_layer_heatmap", "plot_sentiment_vs_coeff", "probe_direction", "random_direction",
    "sentiment_pairs", "setting_name", "steer", "summarize_sweep", "sweep", "top_tokens", "vader_scorer", "val_loss_rise",
    "weights_hash", "words_scorer",
]
