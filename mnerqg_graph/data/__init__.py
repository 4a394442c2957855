"""Data: records, readers and writers of the on-disk formats, SynthTweets, MRC examples."""
