"""Decoding: transducer searches (sprune's batched modified beam search with cached LM fusion,
and ESPnet's `BeamSearchTransducer` as the reference) and the LM state they share."""

SEARCH_BATCH = 64   # utterances one batched search decodes together by default
