# How stages run their jobs. sprune runs one process per stage (CPU or one GPU); for several
# GPUs a stage launches torchrun itself. Kept for ESPnet/Kaldi familiarity.
export train_cmd="run.pl"
export cuda_cmd="run.pl"
