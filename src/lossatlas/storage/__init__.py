"""Where the draws live: resumable batch files and the virtual store over them (store), and
reading them in bounded memory (streaming)."""
