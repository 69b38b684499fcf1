# How stages run their jobs. sprune runs one process per training job (CPU or one GPU); with
# --ngpu / --num-nodes a training stage runs it under torchrun (utils/launch.sh). Kept for
# ESPnet/Kaldi familiarity.
export train_cmd="run.pl"
export cuda_cmd="run.pl"
