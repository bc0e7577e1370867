"""Single-digit addition problems: the small dataset the end-to-end CLI tests run on."""

PROBLEMS = [("1+1=", "2"), ("2+3=", "5"), ("4+4=", "8"), ("3+2=", "5")]
