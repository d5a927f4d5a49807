"""Built-in evaluation metrics."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("metric", "loss", "mean loss per item over the evaluation set (val_loss)",
                 factory=f"{_HERE}.loss:build"),
        PartSpec("metric", "perplexity", "exp of the mean token loss (val_perplexity)",
                 factory=f"{_HERE}.perplexity:build"),
        PartSpec("metric", "accuracy", "share of items whose argmax prediction equals the target (val_accuracy)",
                 factory=f"{_HERE}.accuracy:build"),
        PartSpec("metric", "f1", "precision, recall and F1, macro / micro / weighted over classes (val_f1, "
                                 "val_precision, val_recall)",
                 factory=f"{_HERE}.f1:build", options=f"{_HERE}.f1:F1Options"),
        PartSpec("metric", "entity_f1", "entity-level F1 of BIO token tags, conlleval's convention (val_entity_f1, "
                                        "val_entity_precision, val_entity_recall)",
                 factory=f"{_HERE}.entity_f1:build"),
        PartSpec("metric", "exact_match", "share of sequences whose every scored position is right (val_exact_match)",
                 factory=f"{_HERE}.exact_match:build"),
        # metrics of generated text
        PartSpec("metric", "bleu", "corpus BLEU of generated validation texts, by sacrebleu (val_bleu)",
                 factory=f"{_HERE}.bleu:build", options=f"{_HERE}.bleu:BLEUOptions"),
        PartSpec("metric", "chrf", "corpus chrF (chrF++ with word_order: 2) of generated validation texts, by "
                 "sacrebleu (val_chrf)", factory=f"{_HERE}.chrf:build", options=f"{_HERE}.chrf:CHRFOptions"),
        PartSpec("metric", "rouge", "ROUGE-1/2/L F-measures of generated validation texts, by rouge-score "
                 "(val_rouge1, val_rouge2, val_rougeL)", factory=f"{_HERE}.rouge:build",
                 options=f"{_HERE}.rouge:ROUGEOptions"),
        # extractive question answering
        PartSpec("metric", "squad", "SQuAD's exact match and F1 of the predicted answer texts, official normalization "
                                    "(val_squad_exact_match, val_squad_f1)",
                 factory=f"{_HERE}.squad:build"),
    ]
