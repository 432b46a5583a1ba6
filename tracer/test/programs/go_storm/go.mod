module rbinder.dev/tests/go-storm

go 1.22
