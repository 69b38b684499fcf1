# Sourced by run.sh and run_transducer.sh. data_opts TRAIN_SETS "TEST SETS" prints the options
# of local/data.sh for those sets and for the corpus variables of the caller (download,
# librispeech_root, librilight_root), every value quoted with printf %q: asr.sh and
# transducer.sh eval --local-data-opts (paths with spaces).
data_opts() {
  printf -- '--train-sets %q --test-sets %q --download %q' "$1" "$2" "$download"
  [ -z "$librispeech_root" ] || printf -- ' --librispeech-root %q' "$librispeech_root"
  [ -z "$librilight_root" ] || printf -- ' --librilight-root %q' "$librilight_root"
}
