# Convenience wrappers; the README's commands are `python3 tasks.py book` and `python3 tasks.py test`.
.PHONY: setup book test lint clean
setup:
	python3 tasks.py setup
book:
	python3 tasks.py book
test:
	python3 tasks.py test
lint:
	python3 tasks.py lint
clean:
	rm -rf book/_build book/chapters
