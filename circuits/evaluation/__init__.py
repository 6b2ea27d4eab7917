"""How good is a circuit or a ranking: against a ground truth (`metrics`), by ablation (`faithfulness`)."""
