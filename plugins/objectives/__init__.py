"""Built-in objectives."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("objective", "clm", "causal language modeling: predict each next token",
                 factory=f"{_HERE}.clm:build", options=f"{_HERE}.clm:CLMOptions"),
        PartSpec("objective", "mlm", "masked language modeling (BERT): predict 15% of the tokens from both sides; "
                 "use with model.causal: false", factory=f"{_HERE}.mlm:build", options=f"{_HERE}.mlm:MLMOptions"),
        PartSpec("objective", "sop", "sentence-order prediction (ALBERT): were the two segments swapped? Data: "
                 "sentences with task: sop", factory=f"{_HERE}.sop:build_sop",
                 options=f"{_HERE}.sop:SentencePairOptions"),
        PartSpec("objective", "nsp", "next-sentence prediction (BERT): is the second segment from another "
                 "document? Data: sentences with task: nsp", factory=f"{_HERE}.sop:build_nsp",
                 options=f"{_HERE}.sop:SentencePairOptions"),
        PartSpec("objective", "sentence_order", "sentence permutation: predict each shuffled sentence's original "
                 "position at its first token. Data: sentences with task: permutation",
                 factory=f"{_HERE}.sentence_order:build", options=f"{_HERE}.sentence_order:SentenceOrderOptions"),
        PartSpec("objective", "combined", "a weighted sum of objectives (e.g. mlm + sop) from one forward pass",
                 factory=f"{_HERE}.combined:build", options=f"{_HERE}.combined:CombinedOptions"),
        PartSpec("objective", "sft", "supervised fine-tuning: next-token loss on the response tokens only (the "
                 "batch's labels). Data: prompt_response", factory=f"{_HERE}.sft:build",
                 options=f"{_HERE}.clm:CLMOptions"),
        PartSpec("objective", "classification", "sequence classification (single texts or pairs): a classifier "
                 "head on the pooled sequence, cross-entropy against the labels; needs labeled data",
                 factory=f"{_HERE}.classification:build", options=f"{_HERE}.classification:ClassificationOptions"),
        PartSpec("objective", "token_classification", "token classification (e.g. named entities): a classifier "
                 "head at every position, scored where the data puts a label (each word's first sub-word piece)",
                 factory=f"{_HERE}.token_classification:build",
                 options=f"{_HERE}.token_classification:TokenClassificationOptions"),
        # encoder-decoder objectives
        PartSpec("objective", "seq2seq", "sequence to sequence: cross-entropy of the target tokens with teacher "
                 "forcing (label smoothing optional). Model: encoder_decoder; data: pairs or code_summaries",
                 factory=f"{_HERE}.seq2seq:build", options=f"{_HERE}.seq2seq:Seq2SeqOptions"),
        PartSpec("objective", "span_corruption", "T5 denoising: 15% of the tokens dropped in spans (mean length 3), "
                 "each span a sentinel token; predict the spans. Model: encoder_decoder; tokenizer with sentinels",
                 factory=f"{_HERE}.span_corruption:build", options=f"{_HERE}.span_corruption:SpanCorruptionOptions"),
        PartSpec("objective", "text_infilling", "BART denoising: Poisson-length spans (30% of the tokens) each "
                 "replaced by one mask token, sentences optionally permuted; reconstruct the text. Model: "
                 "encoder_decoder", factory=f"{_HERE}.text_infilling:build",
                 options=f"{_HERE}.text_infilling:TextInfillingOptions"),
        PartSpec("objective", "electra", "replaced-token detection (ELECTRA): a small generator (an MLM over the "
                 "same embeddings, saved with the run) fills masked positions, the model says at every position "
                 "which tokens were replaced; use with model.causal: false", factory=f"{_HERE}.electra:build",
                 options=f"{_HERE}.electra:ElectraOptions"),
        # extractive question answering
        PartSpec("objective", "extractive_qa", "extractive question answering (SQuAD): start and end scores per "
                 "token, cross-entropy on both; evaluation extracts each question's best answer span as text. Data: "
                 "squad or stdlib_qa", factory=f"{_HERE}.extractive_qa:build",
                 options=f"{_HERE}.extractive_qa:ExtractiveQAOptions"),
    ]
