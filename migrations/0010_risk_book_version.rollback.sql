DROP TABLE risk_book_version;
