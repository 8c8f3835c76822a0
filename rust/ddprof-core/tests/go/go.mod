module gopclntabtest

go 1.18
