"""Self-supervised pretraining and probing of upstream models.

`features` (MFCC frames and their alignment to the model's frames), `kmeans` (seeded
k-means++ / Lloyd), `masking` (span masks), `labels` (the k-means units of a data dir),
`hubert_pretrain` (HuBERT iteration 1 on the one Trainer) and `probe` (frozen-upstream
linear probes).
"""
