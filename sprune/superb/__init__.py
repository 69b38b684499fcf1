"""SUPERB-style evaluation of (pruned) upstreams: the SUPERB score of paper 004's Eq. 6
(`score`), frozen-upstream heads on a learned weighted sum of layers for the offline recipe
(`frozen`), and the s3prl downstream runs of the full recipe (`s3prl_tasks`)."""
