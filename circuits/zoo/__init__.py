"""Small task models trained by the project, with ground truth measured by ablation.

Published weights cannot be downloaded offline, so these models are the proving ground: the circuit
each one uses is measured (`ground_truth.find_ground_truth`), not assumed. Modules:
- `data`: the training stream (task prompts with their answers, plus filler text from the vocabulary);
- `train`: the training loop and the held-out quality figures;
- `ground_truth`: the smallest head set that keeps the behaviour under mean ablation;
- `ship`: train -> quality gate -> ground truth -> a checkpoint directory with its manifest.
The shipped checkpoints live in `circuits/zoo/models/tiny-<task>/` and load with
`circuits.models.load_model("tiny-<task>")`.
"""
