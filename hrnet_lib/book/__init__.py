"""The book: what its notebooks call (`chapter`), its report page (`report_page`), its build (`build`)."""
