"""Imported once by the forkserver that starts DatasetBuild worker processes: loads jieba's dictionary (plus
the glossary) and the default OpenCC profile there, so every forked worker starts with them in memory instead
of paying ~1 s of jieba initialisation each."""

from thinktune.data.chinese import opencc_converter, term_recognizer

term_recognizer()
opencc_converter("t2s")
